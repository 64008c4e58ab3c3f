"""Do two runs of the same study reach the same conclusions? The verdicts of the Findings and the dominant
modality of every bias measure, compared between two analysis folders (e.g. the demo with other thread
counts or oneDNN off: the last digits may differ, the conclusions must not).

A difference is a *contradiction* when both sides conclude and disagree (audio vs visual, supported vs not
supported), and a difference in *strength* when one side concludes and the other is inconclusive: the
same evidence on either side of p = 0.05. Both are listed with their p-values; either fails the check."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from avbias.errors import DataError
from avbias.io import read_json

INCONCLUSIVE = "inconclusive"


@dataclass(frozen=True)
class Conclusion:
    verdict: str
    p: float = math.nan

    def __str__(self) -> str:
        return self.verdict if math.isnan(self.p) else f"{self.verdict} (p {self.p:.2g})"


def conclusions(analysis_dir: Path) -> dict[str, Conclusion]:
    """Every conclusion of one dataset's analysis, keyed by what it is about."""
    bias_path, findings_path = analysis_dir / "bias.json", analysis_dir / "findings.csv"
    if not bias_path.is_file():
        raise DataError(f"{bias_path}: missing; run the analyse stage first")
    bias = read_json(bias_path)
    detail = bias.get("dominance_detail", {})
    out = {f"{method}: {measure} favours":
           Conclusion(verdict, detail.get(method, {}).get(measure, {}).get("p", math.nan))
           for method, measures in bias["dominance"].items() for measure, verdict in measures.items()}
    if findings_path.is_file() and findings_path.stat().st_size > 1:
        for r in pd.read_csv(findings_path).to_dict("records"):
            p = float(r["p"]) if "p" in r and pd.notna(r["p"]) else math.nan
            out[f"{r['claim']} / {r['subject']}"] = Conclusion(str(r["verdict"]), p)
    return out


def kind(a: Conclusion | None, b: Conclusion | None) -> str:
    """'contradiction', 'strength' (one side inconclusive) or 'missing' (one side lacks it)."""
    if a is None or b is None:
        return "missing"
    return "strength" if INCONCLUSIVE in (a.verdict, b.verdict) else "contradiction"


def differences(first: Path, second: Path) -> list[str]:
    """One line per conclusion that differs (or exists on one side only) between two analysis folders,
    contradictions first."""
    a, b = conclusions(first), conclusions(second)
    differ = [key for key in sorted(set(a) | set(b))
              if a.get(key) is None or b.get(key) is None or a[key].verdict != b[key].verdict]
    order = {"contradiction": 0, "missing": 1, "strength": 2}
    differ.sort(key=lambda key: order[kind(a.get(key), b.get(key))])
    return [f"{key}: {a.get(key, '(absent)')} vs {b.get(key, '(absent)')} [{kind(a.get(key), b.get(key))}]"
            for key in differ]
