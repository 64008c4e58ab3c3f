"""Power of claim 3: how many seeds, and test clips per class, give 80% power for a 2-point per-class gain?

From one analysis folder (a pilot run), for each claim-3 comparison (a remedy on the baseline, or a method,
against the baseline, on the classes where claim 3 is measured), the per-seed effects (accuracy change,
paired over seeds) give a spread s at the pilot's n0 test clips per class. That spread is split into a
test-sampling part, bounded by the binomial variance of the two accuracies on K classes x n0 clips
(tau^2 <= (p_b (1 - p_b) + p_r (1 - p_r)) / (K n0): the two models' errors on shared clips are not
negatively correlated; capped at s^2), and a training part, sigma^2 = s^2 - tau^2, which more clips do not
reduce. The split is bounded, not measured: sizes at the pilot's clip count follow the observed spread;
larger clip counts are optimistic as far as the bound over-attributes the spread to clips. With 3 pilot
seeds, s itself is uncertain (its 95% interval spans about 0.5 s to 6 s): treat the table as a first sizing.
At n clips per class and S seeds, the per-seed effect has variance sigma^2 + tau^2 n0 / n; the power of the
two-sided paired t-test at alpha / m (Holm's first step over the m claim-3 comparisons: the strictest
level any of them meets) for a true gain of `--gain` is simulated.

    python benchmarks/power.py results/pilot/analysis/synth_cremad --classes SAD,FEA

Prints, per comparison, the pilot's effect and spread, and the fewest seeds (up to --max-seeds) that reach
the target power at each test size.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import numpy as np
import pandas as pd

from avbias.analyse import findings as fnd
from avbias.analyse.stats import incomplete_beta

MEASURED_ROW = "3. the baseline where claim 3 is measured"


def t_critical(df: int, alpha: float) -> float:
    """The t with two-sided p = alpha at df degrees of freedom (bisection on the incomplete beta)."""
    low, high = 0.0, 1e4
    for _ in range(200):
        mid = (low + high) / 2
        if incomplete_beta(df / 2, 0.5, df / (df + mid * mid)) > alpha:
            low = mid
        else:
            high = mid
    return (low + high) / 2


def power(gain: float, sd: float, seeds: int, alpha: float, sims: int = 4000, seed: int = 0) -> float:
    """Share of simulated studies (seeds per-seed effects ~ N(gain, sd^2)) whose two-sided t-test has p < alpha
    with the effect positive."""
    if seeds < 2:
        return 0.0
    rng = np.random.default_rng(seed)
    x = rng.normal(gain, sd, (sims, seeds))
    t = x.mean(1) / (x.std(1, ddof=1) / np.sqrt(seeds))
    return float(np.mean(t > t_critical(seeds - 1, alpha)))


def seeds_needed(gain: float, sd: float, alpha: float, target: float, max_seeds: int) -> int | None:
    for s in range(3, max_seeds + 1):
        if power(gain, sd, s, alpha) >= target:
            return s
    return None


def per_seed_effects(folder: Path, classes: list[str]) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """Per comparison, the per-seed accuracy change on `classes` (mean over them), and the mean accuracy
    (baseline and comparison) there, from per_class.csv and remedies.csv."""
    per_class = pd.read_csv(folder / "per_class.csv")
    all_classes = list(dict.fromkeys(per_class["class"]))
    base = per_class[per_class["method"] == fnd.BASELINE].pivot_table(index="seed", columns="class", values="acc")
    base_acc = base[classes].mean(axis=1)
    tables: dict[str, pd.Series] = {}
    remedies_path = folder / "remedies.csv"
    if remedies_path.is_file() and remedies_path.stat().st_size > 1:
        rem = pd.read_csv(remedies_path)
        rem = rem[(rem["method"] == fnd.BASELINE) & (rem["remedy"] != "none")]
        columns = [f"class_acc_{all_classes.index(c)}" for c in classes]
        for name, group in rem.groupby("remedy"):
            tables[f"remedy: {name}"] = group.set_index("seed")[columns].mean(axis=1)
    joint = per_class[(per_class["method"] != fnd.BASELINE) & ~per_class["method"].str.startswith("unimodal_")]
    for method, group in joint.groupby("method"):
        tables[f"method: {method}"] = group.pivot_table(index="seed", columns="class", values="acc")[classes].mean(
            axis=1)
    effects, accuracy = {}, {"baseline": float(base_acc.mean())}
    for name, acc in tables.items():
        seeds = acc.index.intersection(base_acc.index)
        effects[name] = (acc[seeds] - base_acc[seeds]).to_numpy(float)
        accuracy[name] = float(acc[seeds].mean())
    return effects, accuracy


def measured_classes(folder: Path) -> list[str]:
    """The classes the findings measured claim 3 on (the row MEASURED_ROW's evidence)."""
    found = pd.read_csv(folder / "findings.csv")
    row = found[found["claim"] == MEASURED_ROW]
    if row.empty:
        raise SystemExit(f"{folder}/findings.csv: no {MEASURED_ROW!r} row; pass --classes")
    match = re.match(r"accuracy on (.+?) \(", str(row["evidence"].iloc[0]))
    if not match:
        raise SystemExit(f"cannot read the classes from {row['evidence'].iloc[0]!r}; pass --classes")
    return [c.strip() for c in match.group(1).split(",")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path, help="an analysis folder: results/<run>/analysis/<dataset>")
    parser.add_argument("--classes", help="comma-separated classes claim 3 is measured on (default: findings.csv's)")
    parser.add_argument("--gain", type=float, default=0.02, help="the true per-class gain to detect (0.02: 2 points)")
    parser.add_argument("--alpha", type=float, default=fnd.ALPHA)
    parser.add_argument("--family", type=int, help="claim-3 comparisons under Holm (default: findings.csv's)")
    parser.add_argument("--target", type=float, default=0.8)
    parser.add_argument("--max-seeds", type=int, default=40)
    parser.add_argument("--clips", default="25,50,100,200,400", help="test clips per class to size for")
    args = parser.parse_args()
    classes = args.classes.split(",") if args.classes else measured_classes(args.folder)
    found = pd.read_csv(args.folder / "findings.csv")
    # The claim-3 family Holm corrects over (findings.holm_claim3): rows with p_holm, less the secondary
    # overall-accuracy rows (their own family), a comparison restated by two rows counted once.
    in_family = (found["p_holm"].notna() & (found["claim"] != fnd.OVERALL_CLAIM)) if "p_holm" in found else None
    distinct = len(found.loc[in_family, ["effect", "p", "n_seeds"]].drop_duplicates()) if in_family is not None else 1
    family = max(args.family or distinct, 1)
    per_class = pd.read_csv(args.folder / "per_class.csv")
    counts = pd.read_csv(args.folder / "samples.csv") if (args.folder / "samples.csv").is_file() else None
    n0 = (float(counts[counts["method"] == fnd.BASELINE].groupby("seed")["label"].count().mean()) / per_class[
        "class"].nunique() if counts is not None and len(counts) else float("nan"))
    effects, accuracy = per_seed_effects(args.folder, classes)
    grid = [int(x) for x in args.clips.split(",")]
    alpha = args.alpha / family
    print(f"classes {', '.join(classes)}; pilot {n0:.0f} test clips per class; baseline accuracy there "
          f"{accuracy['baseline']:.3f}; gain {args.gain:+.3f}; alpha {args.alpha} / {family} comparisons (Holm's "
          f"first step) = {alpha:.4f}; target power {args.target}")
    print("| comparison | pilot effect | sd over seeds | seeds | " + " | ".join(f"seeds for 80% at {n} clips/class"
                                                                      for n in grid) + " |")
    print("|---|---|---|---|" + "---|" * len(grid))
    p_base = accuracy["baseline"]
    for name, eff in sorted(effects.items()):
        if len(eff) < 2:
            continue
        s2 = float(np.var(eff, ddof=1))
        p_rem = accuracy[name]
        # The part more clips would reduce: at most the binomial bound, and at most what was observed (the
        # spread at the pilot's own size is the measured one; larger sizes are optimistic by as much as the
        # bound over-attributes to clips).
        tau2 = min((p_base * (1 - p_base) + p_rem * (1 - p_rem)) / (len(classes) * n0), s2)
        sigma2 = s2 - tau2
        cells = []
        for n in grid:
            need = seeds_needed(args.gain, float(np.sqrt(sigma2 + tau2 * n0 / n)), alpha, args.target, args.max_seeds)
            cells.append(str(need) if need else f"> {args.max_seeds}")
        print(f"| {name} | {eff.mean():+.3f} | {np.sqrt(s2):.3f} | {len(eff)} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
