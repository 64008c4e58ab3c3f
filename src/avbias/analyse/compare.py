"""Do two runs of the same study reach the same conclusions? The verdicts of the Findings and the dominant
modality of every bias measure, compared between two analysis folders (e.g. the demo with other thread
counts or oneDNN off: the last digits may differ, the conclusions must not).

Two such runs train different trajectories from the same seeds, so they agree only as often as two sets
of seeds do; a verdict whose p lies near 0.05 lands on either side of it (benchmarks/verdict_stability.py:
about 8 of the demo's 56 conclusions at 4 seeds, and still 0.7 at 16). So each difference is classified:
- contradiction: both sides conclude and disagree (audio vs visual, supported vs not supported);
- missing: a conclusion on one side only;
- shifted: one side is inconclusive and the two estimates differ by more than their seeds' spread allows
  (Welch test, p < 0.05 / the number of conclusions compared: Bonferroni);
- threshold: one side is inconclusive, the estimates agree within that spread: the same evidence on either
  side of p = 0.05, or of the convergence check (a seed-mean rise over the last quarter near 2 points: then
  both p-values are below 0.05).
The first three fail the check; threshold differences are listed with both p-values."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from avbias.analyse.contract import BIAS, file_name, read_table
from avbias.analyse.stats import welch_p
from avbias.errors import DataError
from avbias.io import read_json

INCONCLUSIVE = "inconclusive"
ALPHA = 0.05
FAILING = ("contradiction", "missing", "shifted")


@dataclass(frozen=True)
class Conclusion:
    verdict: str
    p: float = math.nan
    estimate: float = math.nan      # the tested quantity, on the same scale in every run of a study
    se: float = math.nan            # its standard error over seeds
    n: int = 0

    def __str__(self) -> str:
        return self.verdict if math.isnan(self.p) else f"{self.verdict} (p {self.p:.2g})"


@dataclass(frozen=True)
class Difference:
    key: str
    first: Conclusion | None
    second: Conclusion | None
    kind: str
    p_same: float = math.nan        # Welch p of equal estimates, for differences in strength

    def __str__(self) -> str:
        same = "" if math.isnan(self.p_same) else f", estimates {self._estimates()} (Welch p {self.p_same:.2g})"
        return f"{self.key}: {self.first or '(absent)'} vs {self.second or '(absent)'} [{self.kind}{same}]"

    def _estimates(self) -> str:
        return f"{self.first.estimate:+.3f} vs {self.second.estimate:+.3f}" if self.first and self.second else ""


def _float(record: dict, key: str) -> float:
    value = record.get(key)
    return float(value) if value is not None and pd.notna(value) else math.nan


def conclusions(analysis_dir: Path) -> dict[str, Conclusion]:
    """Every conclusion of one dataset's analysis, keyed by what it is about."""
    bias_path = analysis_dir / file_name(BIAS)
    if not bias_path.is_file():
        raise DataError(f"{bias_path}: missing; run the analyse stage first")
    bias = read_json(bias_path)
    detail = bias.get("dominance_detail", {})
    out = {}
    for method, measures in bias["dominance"].items():
        for measure, verdict in measures.items():
            r = detail.get(method, {}).get(measure, {})
            shares = r.get("shares", {})
            first = shares[min(shares)] if shares else math.nan     # one modality's share, the same in every run
            out[f"{method}: {measure} favours"] = Conclusion(verdict, _float(r, "p"), first, _float(r, "se"),
                                                             int(r.get("n_seeds", 0)))
    for r in read_table(analysis_dir, "findings").to_dict("records"):
        n = _float(r, "n_seeds")
        out[f"{r['claim']} / {r['subject']}"] = Conclusion(
            str(r["verdict"]), _float(r, "p"), _float(r, "effect"), _float(r, "se"), 0 if math.isnan(n) else int(n))
    return out


def compare(first: Path, second: Path) -> list[Difference]:
    """Every conclusion that differs between two analysis folders, failing kinds first."""
    a, b = conclusions(first), conclusions(second)
    tested = sum(1 for key in set(a) & set(b) if not (math.isnan(a[key].se) or math.isnan(b[key].se)))
    out = []
    for key in sorted(set(a) | set(b)):
        x, y = a.get(key), b.get(key)
        if x is None or y is None:
            out.append(Difference(key, x, y, "missing"))
        elif x.verdict != y.verdict:
            if INCONCLUSIVE not in (x.verdict, y.verdict):
                out.append(Difference(key, x, y, "contradiction"))
                continue
            p = welch_p(x.estimate, x.se, x.n, y.estimate, y.se, y.n)
            shifted = math.isnan(p) or p < ALPHA / max(tested, 1)
            out.append(Difference(key, x, y, "shifted" if shifted else "threshold", p))
    order = {"contradiction": 0, "missing": 1, "shifted": 2, "threshold": 3}
    return sorted(out, key=lambda d: order[d.kind])


def differences(first: Path, second: Path) -> list[str]:
    """One line per conclusion that differs, failing kinds first."""
    return [str(d) for d in compare(first, second)]
