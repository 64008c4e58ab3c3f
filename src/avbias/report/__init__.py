"""The report stage: figures, one self-contained report.html, summary.md and DVC metrics, from the analyses
(avbias.analyse.contract, loaded and nothing else read of them) and each dataset's acquire and extract records.

build.py     the page, the summary and the metrics from analyses in memory
tables.py    the tables ('mean ± std' cells, verdicts with their evidence)
figures.py   the figures (matplotlib), each returning its caption

Importing this package costs nothing: `report` imports the modules when it runs."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def report(analysis_dirs: list[Path], raw_dirs: list[Path], feature_dirs: list[Path], out_dir: Path,
           summary_md: Path, metrics_json: Path, params: dict[str, Any]) -> None:
    """`avbias report`: load each dataset's analysis, acquire.json and extract.json (the three lists in the
    same order), then write the report (build.build_report)."""
    from avbias.analyse.contract import DatasetAnalysis
    from avbias.io import read_json
    from avbias.report.build import build_report

    analyses = [DatasetAnalysis.load(d) for d in analysis_dirs]
    data = [(read_json(raw / "acquire.json"), read_json(features / "extract.json"))
            for raw, features in zip(raw_dirs, feature_dirs, strict=True)]
    build_report(analyses, data, out_dir, summary_md, metrics_json, params)
