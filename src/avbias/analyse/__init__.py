"""The analyse stage: a dataset's runs in, one DatasetAnalysis (contract.py) out, which the report reads.

runs.py            the runs together: aggregation over seeds, persistence, dominance, capability, weak modality
measures.py        one run's measures (run, class, sample), its decision-layer remedies and branch calibration
references.py      what the baseline's per-class accuracy is held against (late fusion, re-fused branches, Bayes)
claims.py          the paper's claims and the planted truths for one dataset, as the findings table
findings.py        the tests behind a verdict (supported | not supported | inconclusive, and why)
decision_layer.py, remedies.py, calibration.py, stats.py, planted.py, cues.py, capability.py
                   pure functions on arrays
compare.py         `avbias compare-verdicts`: do two analyses of one study reach the same conclusions?

Importing this package costs nothing: `analyse` imports the modules when it runs."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from avbias.analyse.contract import DatasetAnalysis

log = logging.getLogger(__name__)


def analyse(dataset: str, run_dirs: list[Path], out_dir: Path, params: dict[str, Any]) -> DatasetAnalysis:
    """`avbias analyse`: read the dataset's runs, analyse them (runs.analyse_runs), save the result to out_dir."""
    from avbias.analyse.runs import analyse_runs, load_run

    analysis = analyse_runs(dataset, [load_run(d) for d in sorted(run_dirs)], params)
    analysis.save(out_dir)
    log.info("dominance: %s; capability: %s", analysis.bias["dominance"], analysis.bias["capability"])
    return analysis
