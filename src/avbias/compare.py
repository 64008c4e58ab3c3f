"""Do two runs of the same study reach the same conclusions? The verdicts of the Findings and the dominant
modality of every bias measure, compared between two analysis folders (e.g. the demo with other thread
counts or oneDNN off: the last digits may differ, the conclusions must not)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from avbias.errors import DataError
from avbias.io import read_json


def conclusions(analysis_dir: Path) -> dict[str, str]:
    """Every conclusion of one dataset's analysis, keyed by what it is about."""
    bias_path, findings_path = analysis_dir / "bias.json", analysis_dir / "findings.csv"
    if not bias_path.is_file():
        raise DataError(f"{bias_path}: missing; run the analyse stage first")
    out = {f"{method}: {measure} favours": modality
           for method, measures in read_json(bias_path)["dominance"].items() for measure, modality in measures.items()}
    if findings_path.is_file() and findings_path.stat().st_size > 1:
        for r in pd.read_csv(findings_path).to_dict("records"):
            out[f"{r['claim']} / {r['subject']}"] = str(r["verdict"])
    return out


def differences(first: Path, second: Path) -> list[str]:
    """One line per conclusion that differs (or exists on one side only) between two analysis folders."""
    a, b = conclusions(first), conclusions(second)
    return [f"{key}: {a.get(key, '(absent)')} vs {b.get(key, '(absent)')}" for key in sorted(set(a) | set(b))
            if a.get(key) != b.get(key)]
