"""What the analyse stage hands the report, one per dataset: the only files either side names.

The analysis builds a DatasetAnalysis and saves it (`save`: one file per field, `<field>.csv` or bias.json);
the report, `avbias compare-verdicts` and the tests load it (`load`). FILES names each field's file, and the
analyse rule's outputs (workflow/rules/analyse.smk) are declared from it. Tables are written with 6 significant
digits; loading a saved analysis and saving it again gives the same bytes.

Reading this module imports no pandas (the Snakefile reads FILES); its functions import it when called."""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

BIAS = "bias"
FLOAT_FORMAT = "%.6g"
BASELINE = "baseline"       # the joint method every other allocation is held against (findings, report)
# calibration.csv's ECE bins: equal-width confidence intervals, as many as Guo et al. 2017 use (analyse.calibration).
ECE_BINS = 15


@dataclass
class DatasetAnalysis:
    """One dataset's analysis. Tables are long or wide frames keyed by method and seed (and class, sample)."""

    # dataset, split, dominance (verdict per joint method and measure) and dominance_detail (its evidence),
    # capability (unimodal accuracy, the stronger modality), weak_modality, selection, test_clips, seeds,
    # environment, initialisation, findings (the findings table's rows)
    bias: dict[str, Any]
    runs: pd.DataFrame               # one row per run: accuracies and the run-level bias measures
    summary: pd.DataFrame            # runs' numeric measures over seeds per method: mean, std, n, 95% CI (long)
    per_class: pd.DataFrame          # one row per run and class
    samples: pd.DataFrame            # one row per joint run and test sample: feature norms, contributions
    curves: pd.DataFrame             # every run's curve.csv (per epoch), with method and seed
    convergence: pd.DataFrame        # per method: rise of the seed-mean curve over the last quarter
    persistence: pd.DataFrame        # per bias share and joint method: over seeds, paired test against baseline
    remedies: pd.DataFrame           # per linear-head run and decision-layer remedy: test accuracy, weak decides
    remedies_summary: pd.DataFrame   # remedies over seeds per method and remedy (long)
    calibration: pd.DataFrame        # per linear-head run and branch: test NLL, ECE (ECE_BINS), before/after its T
    capability: pd.DataFrame         # per class: external capability (human raters, planted SNR), unimodal models
    references: pd.DataFrame         # per seed and class: late fusion, re-fused branches, Bayes-optimal accuracy
    findings: pd.DataFrame           # the paper's claims and planted truths with their verdicts

    @property
    def dataset(self) -> str:
        return self.bias["dataset"]

    @property
    def modalities(self) -> list[str]:
        return sorted({c.removeprefix("branch_acc_") for c in self.runs.columns if c.startswith("branch_acc_")})

    @property
    def joint_methods(self) -> list[str]:
        return list(dict.fromkeys(self.runs.loc[is_joint(self.runs["modalities"]), "method"]))

    def stat(self, method: str, measure: str) -> tuple[float, float] | None:
        """(mean, std) over seeds of one method's measure, None where it was not measured."""
        hit = self.summary[(self.summary["method"] == method) & (self.summary["measure"] == measure)]
        return None if hit.empty else (float(hit["mean"].iloc[0]), float(hit["std"].iloc[0]))

    def save(self, folder: Path) -> None:
        """Every table, then bias.json, each written atomically."""
        from avbias.io import atomic_path, write_json

        for name in TABLES:
            with atomic_path(folder / file_name(name)) as tmp:
                getattr(self, name).to_csv(tmp, index=False, float_format=FLOAT_FORMAT)
        write_json(folder / file_name(BIAS), self.bias)

    @classmethod
    def load(cls, folder: Path) -> DatasetAnalysis:
        from avbias.io import read_json

        return cls(bias=read_json(folder / file_name(BIAS)), **{name: read_table(folder, name) for name in TABLES})


def file_name(field: str) -> str:
    return f"{field}.json" if field == BIAS else f"{field}.csv"


TABLES: tuple[str, ...] = tuple(f.name for f in fields(DatasetAnalysis) if f.name != BIAS)
FILES: dict[str, str] = {f.name: file_name(f.name) for f in fields(DatasetAnalysis)}   # field -> its file


def read_table(folder: Path, name: str) -> pd.DataFrame:
    """One saved table; an empty frame for a table without rows or columns (saved as a bare newline) or absent."""
    import pandas as pd

    path = folder / file_name(name)
    return pd.read_csv(path) if path.is_file() and path.stat().st_size > 1 else pd.DataFrame()


def is_joint(modalities: pd.Series) -> pd.Series:
    """Rows of a runs table (column `modalities`, e.g. "audio+visual") that are joint models."""
    return modalities.str.contains("+", regex=False)
