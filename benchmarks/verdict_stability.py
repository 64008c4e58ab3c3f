"""How many seeds would the demo's verdicts need to hold across thread counts?

Two runs of one study that differ only in floating-point rounding (thread count, oneDNN) train different
trajectories, so their verdicts agree only as often as two sets of seeds do. From the per-seed values of
every conclusion in one or more analysis folders (pooled: each folder's seeds are distinct draws), this
estimates each conclusion's mean and spread, then simulates two independent runs with n seeds each and the
report's rule (two-sided t-test over seeds, p < 0.05) and prints the expected number of conclusions that
differ between them, and the chance that none does.

    python benchmarks/verdict_stability.py results/demo/analysis/synth_cremad results/demo_check/analysis/synth_cremad
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from avbias.analyse import findings as fnd
from avbias.analyse.contract import is_joint, read_table
from avbias.analyse.runs import DOMINANCE_MEASURES
from avbias.analyse.stats import t_test_p


def per_seed_values(runs: pd.DataFrame, dominant: str) -> dict[str, np.ndarray]:
    """Per conclusion, the per-seed values its t-test is run on (null 0): dominance shares of the leaning
    modality minus 1/2, the persistence share minus 1/2, the paired shift from the baseline, and claim 2."""
    joint = runs[is_joint(runs["modalities"])]
    modalities = joint["modalities"].iloc[0].split("+")
    out = {}
    for method, group in joint.groupby("method"):
        for measure in DOMINANCE_MEASURES:
            columns = [f"{measure}_{m}" for m in modalities]
            if not set(columns) <= set(group) or group[columns].isna().all().any():
                continue
            values = group[columns].dropna().to_numpy(float).clip(min=0.0)
            shares = values[:, 0] / np.maximum(values.sum(1), 1e-12)
            out[f"{method}: {measure} favours"] = shares - 0.5
    base = joint[joint["method"] == fnd.BASELINE]
    base_share = fnd.decision_share(base, dominant, "centred_logit_share")
    for method, group in joint.groupby("method"):
        share = fnd.decision_share(group, dominant, "centred_logit_share")
        out[f"1. the bias persists / {method}"] = share.to_numpy() - 0.5
        if method != fnd.BASELINE:
            keys = share.index.intersection(base_share.index)
            out[f"1. shift from the baseline / {method}"] = (share[keys] - base_share[keys]).to_numpy()
    sign = 1.0 if base["modalities"].iloc[0].startswith(dominant) else -1.0
    out["2. from feature-norm disparity / baseline"] = sign * np.log(base["feature_norm_ratio"].to_numpy(float))
    out["2. from decision-weight disparity / baseline"] = sign * (base["weight_share"].to_numpy(float) - 0.5)
    return {k: v[~np.isnan(v)] for k, v in out.items() if np.isfinite(v).sum() > 2}


def significant_rate(mean: float, sd: float, n: int, draws: int, rng: np.random.Generator) -> tuple[float, float]:
    """P(p < 0.05 with a positive effect), P(p < 0.05 with a negative one) for n normal seeds."""
    samples = rng.normal(mean, sd, size=(draws, n))
    p = np.array([t_test_p(s) for s in samples])
    positive = samples.mean(1) > 0
    return float(np.mean((p < fnd.ALPHA) & positive)), float(np.mean((p < fnd.ALPHA) & ~positive))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("analyses", nargs="+", type=Path, help="analysis folders of runs of one study")
    parser.add_argument("--seeds", type=int, nargs="+", default=[3, 4, 6, 8, 12, 16])
    parser.add_argument("--draws", type=int, default=2000)
    args = parser.parse_args()
    # Seeds renumbered per folder: every (folder, seed) is its own draw, paired with the same folder's baseline.
    runs = pd.concat([read_table(d, "runs").pipe(lambda r, i=i: r.assign(seed=r["seed"] + 1000 * i))
                      for i, d in enumerate(args.analyses)], ignore_index=True)
    values = per_seed_values(runs, dominant="audio")
    rng = np.random.default_rng(0)
    print(f"{len(values)} conclusions; per-seed values pooled over {len(args.analyses)} folder(s)")
    print("| seeds | expected conclusions that differ between two runs | P(all agree) |")
    print("|---|---|---|")
    for n in args.seeds:
        differ, agree_all = 0.0, 1.0
        for v in values.values():
            pos, neg = significant_rate(float(v.mean()), float(v.std(ddof=1)), n, args.draws, rng)
            same = pos ** 2 + neg ** 2 + (1 - pos - neg) ** 2
            differ += 1 - same
            agree_all *= same
        print(f"| {n} | {differ:.1f} | {agree_all:.2f} |")


if __name__ == "__main__":
    main()
