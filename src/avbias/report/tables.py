"""Tables for the report: the analysis summaries in 'mean ± std' form."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from avbias.io import read_json


@dataclass
class DatasetAnalysis:
    """What the analyse stage wrote for one dataset."""

    dataset: str
    runs: pd.DataFrame
    summary: pd.DataFrame
    per_class: pd.DataFrame
    curves: pd.DataFrame
    bias: dict[str, Any]
    samples: pd.DataFrame
    persistence: pd.DataFrame
    remedies: pd.DataFrame
    remedies_summary: pd.DataFrame
    capability: pd.DataFrame

    @classmethod
    def load(cls, folder: Path) -> "DatasetAnalysis":
        bias = read_json(folder / "bias.json")

        def table(name: str) -> pd.DataFrame:
            path = folder / name
            return pd.read_csv(path) if path.is_file() and path.stat().st_size > 1 else pd.DataFrame()

        return cls(bias["dataset"], table("runs.csv"), table("summary.csv"), table("per_class.csv"), table("curves.csv"),
                   bias, table("samples.csv"), table("persistence.csv"), table("remedies.csv"),
                   table("remedies_summary.csv"), table("capability.csv"))

    @property
    def joint_methods(self) -> list[str]:
        joint = self.runs[self.runs["modalities"].str.contains(r"\+")]
        return list(dict.fromkeys(joint["method"]))

    @property
    def modalities(self) -> list[str]:
        return sorted({c.removeprefix("branch_acc_") for c in self.runs.columns if c.startswith("branch_acc_")})

    def stat(self, method: str, measure: str) -> tuple[float, float] | None:
        hit = self.summary[(self.summary["method"] == method) & (self.summary["measure"] == measure)]
        return None if hit.empty else (float(hit["mean"].iloc[0]), float(hit["std"].iloc[0]))


def fmt(stat: tuple[float, float] | None, scale: float = 1.0, digits: int = 1) -> str:
    if stat is None:
        return "–"
    mean, std = stat
    return f"{mean * scale:.{digits}f} ± {std * scale:.{digits}f}"


def accuracy_table(a: DatasetAnalysis) -> pd.DataFrame:
    """Method x (test accuracy, macro-F1, each branch's accuracy through the fused head), in %."""
    rows = []
    for method in a.runs["method"].unique():
        row = {"method": method, "seeds": int((a.runs["method"] == method).sum()),
               "test acc (%)": fmt(a.stat(method, "test_acc"), 100),
               "macro-F1 (%)": fmt(a.stat(method, "test_macro_f1"), 100)}
        for m in a.modalities:
            row[f"{m} branch acc (%)"] = fmt(a.stat(method, f"branch_acc_{m}"), 100)
        rows.append(row)
    return pd.DataFrame(rows)


def bias_table(a: DatasetAnalysis) -> pd.DataFrame:
    """Joint methods x decision-layer measures per modality, with the dominant modality of each."""
    rows = []
    for method, verdict in a.bias["dominance"].items():
        row: dict[str, Any] = {"method": method}
        for m in a.modalities:
            row[f"‖W_{m}‖"] = fmt(a.stat(method, f"weight_norm_{m}"), digits=3)
        for m in a.modalities:
            row[f"mean |W_{m} f_{m}|"] = fmt(a.stat(method, f"logit_contrib_{m}"), digits=3)
        row["dominant (weights)"] = verdict.get("weight_norm", "–")
        row["dominant (logits)"] = verdict.get("logit_contrib", "–")
        rows.append(row)
    return pd.DataFrame(rows)


def persistence_table(a: DatasetAnalysis) -> pd.DataFrame:
    """Bias measure x method: mean ± std over seeds, 95% bootstrap CI, paired p against the baseline."""
    if a.persistence.empty:
        return pd.DataFrame()
    first = a.modalities[0] if a.modalities else "audio"
    label = {"weight_share": f"{first} share of ‖W‖", "logit_share": f"{first} share of |W f|",
             "decides_share": f"{first} share of decisions (disagreements)", "shapley_share": f"{first} share of Shapley",
             "feature_norm_ratio": "‖f_a‖ / ‖f_v‖"}
    rows = []
    for r in a.persistence.itertuples(index=False):
        rows.append({"measure": label.get(r.measure, r.measure), "method": r.method, "mean ± std": f"{r.mean:.3f} ± {r.std:.3f}",
                     "95% CI": f"[{r.ci_low:.3f}, {r.ci_high:.3f}]" if pd.notna(r.ci_low) else "–",
                     "p vs baseline (paired, n)": f"{r.p_vs_baseline:.2f} ({r.n_paired})" if pd.notna(r.p_vs_baseline) else "–"})
    return pd.DataFrame(rows)


def remedies_table(a: DatasetAnalysis) -> pd.DataFrame:
    """Joint method x remedy: test accuracy, macro-F1, the weak modality's share of decisions (mean ± std)."""
    if a.remedies_summary.empty:
        return pd.DataFrame()
    s = a.remedies_summary.set_index(["method", "remedy", "measure"])
    rows = []
    for (method, remedy), _ in a.remedies.groupby(["method", "remedy"], sort=False):
        def cell(measure: str, scale: float = 100) -> str:
            hit = s.loc[(method, remedy, measure)] if (method, remedy, measure) in s.index else None
            return "–" if hit is None else f"{hit['mean'] * scale:.1f} ± {hit['std'] * scale:.1f}"
        rows.append({"method": method, "remedy": remedy, "test acc (%)": cell("test_acc"),
                     "macro-F1 (%)": cell("test_macro_f1"), f"{a.bias.get('weak_modality')} decides (%)": cell("weak_decides")})
    return pd.DataFrame(rows)


def method_dataset_table(analyses: list[DatasetAnalysis]) -> pd.DataFrame:
    """Method x dataset: test accuracy (mean ± std over seeds) with each branch's accuracy beside it."""
    rows: dict[str, dict[str, str]] = {}
    for a in analyses:
        for method in a.runs["method"].unique():
            branches = " / ".join(fmt(a.stat(method, f"branch_acc_{m}"), 100) for m in a.modalities
                                  if a.stat(method, f"branch_acc_{m}") is not None)
            cell = fmt(a.stat(method, "test_acc"), 100) + (f" ({branches})" if branches else "")
            rows.setdefault(method, {"method": method})[a.dataset] = cell
    return pd.DataFrame(list(rows.values())).fillna("–")


def markdown(frame: pd.DataFrame) -> str:
    if frame.empty:
        return "_no rows_\n"
    header = "| " + " | ".join(str(c).replace("|", "\\|") for c in frame.columns) + " |"
    rule = "|" + "---|" * len(frame.columns)
    body = ["| " + " | ".join(str(v).replace("|", "\\|") for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([header, rule, *body]) + "\n"


def data_table(acquired: dict[str, Any], extracted: dict[str, Any]) -> pd.DataFrame:
    """Where a dataset's clips came from and how many reached training (acquire.json, extract.json)."""
    rows = [("source", acquired["source"]), ("clips indexed", acquired["clips"]), ("classes", len(acquired["classes"]))]
    if "coverage" in acquired:
        cov = acquired["coverage"]
        rows.append(("coverage of the literature split",
                     f"{cov['found']} / {cov['total']} ({cov['coverage']:.1%}); missing ids: raw/missing_ids.txt"))
    if "excluded_defective" in acquired:
        rows.append(("known defective clips excluded", ", ".join(acquired["excluded_defective"]) or "none"))
        rows.append(("known defective clips kept", ", ".join(acquired["kept_defective"]) or "none"))
    rows += [("clips in the splits", extracted["clips"]), ("clips extracted", extracted["extracted"]),
             ("clips quarantined (undecodable)", extracted["quarantined"])]
    return pd.DataFrame(rows, columns=["", "value"]).astype(str)
