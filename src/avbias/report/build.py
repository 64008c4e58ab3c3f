"""The report from the analyses in memory: figures, one self-contained report.html, summary.md and DVC metrics."""

from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import Any

from avbias.analyse.contract import ECE_BINS, DatasetAnalysis
from avbias.io import atomic_path, write_json
from avbias.report.figures import FIGURES
from avbias.report.tables import (
    accuracy_table,
    bias_table,
    calibration_table,
    convergence_table,
    data_table,
    dominance_cell,
    findings_table,
    markdown,
    method_dataset_table,
    persistence_table,
    protocol_table,
    remedies_table,
)

STYLE = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:1em 0;font-size:90%}\
td,th{border:1px solid #ccc;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f3f3f3}td:first-child{text-align:left}figure{margin:1.5em 0}figcaption{font-size:90%;color:#444}
img{max-width:100%}"""


CALIBRATION = "Branch calibration (test split, temperatures fit on validation)"
SECTION_NOTES = {
    "Decision-layer bias (test split)": (
        "Dominant: the modality whose share of the measure (per seed) exceeds one half, with p &lt; 0.05 over at "
        "least 3 seeds (t-test); otherwise inconclusive, with the way the seed means lean. In brackets: the "
        "share of that modality, p and the seeds."),
    CALIBRATION: (
        "Whether each branch's own prediction softmax(W_m f_m + b/M) is calibrated on test, as trained and after a "
        "temperature T_m fit on that branch's validation NLL alone (T_m &gt; 1: it was over-confident; ECE over "
        f"{ECE_BINS} equal-width confidence bins); the remedy calibrate_branches fuses these calibrated branches, "
        "Σ_m W_m f_m / T_m + b."),
}


def verdict_text(a: DatasetAnalysis) -> str:
    cap = a.bias["capability"]
    parts = []
    if cap["unimodal_test_acc"]:
        accs = ", ".join(f"{m} {v * 100:.1f}%" for m, v in cap["unimodal_test_acc"].items())
        parts.append(f"Unimodal test accuracy: {accs}; the more capable modality is <b>{cap['stronger']}</b>.")
    for method in a.bias["dominance"]:
        weights, logits = dominance_cell(a, method, "weight_norm"), dominance_cell(a, method, "logit_contrib")
        parts.append(f"{html.escape(method)}: decision weights favour <b>{html.escape(weights)}</b>, "
                     f"logit contributions favour <b>{html.escape(logits)}</b>.")
    return " ".join(parts)


def metrics_for_dvc(a: DatasetAnalysis) -> dict[str, Any]:
    """Per method: test accuracy and the main bias measures (seed means), for `dvc metrics show`."""
    out: dict[str, Any] = {}
    keep = ("test_acc", "test_macro_f1", "branch_acc_", "weight_share_", "logit_share_", "decides_", "shapley_")
    for row in a.summary.itertuples(index=False):
        if row.measure.startswith(keep):
            out.setdefault(row.method, {})[row.measure] = round(float(row.mean), 6)
    return out


def write_plot_data(a: DatasetAnalysis, out_dir: Path) -> None:
    """The DVC plot's data (dvc.yaml `plots`): plots/<dataset>/<method>.csv, epoch and accuracy (validation,
    or training for protocols without a validation split), mean over seeds. One file per method, so the
    plot definition names fixed fields whatever run.methods holds."""
    column = "val_acc" if "val_acc" in a.curves else "train_acc"
    for method, curve in a.curves.groupby("method", sort=True):
        mean = curve.groupby("epoch")[column].mean().rename("accuracy").reset_index()
        with atomic_path(out_dir / "plots" / a.dataset / f"{method}.csv") as tmp:
            mean.to_csv(tmp, index=False, float_format="%.6g")


def build_report(analyses: list[DatasetAnalysis], data: list[tuple[dict[str, Any], dict[str, Any]]], out_dir: Path,
                 summary_md: Path, metrics_json: Path, params: dict[str, Any]) -> None:
    """Write report.html (figures inlined), figures/, plots/, summary_md and metrics_json from the analyses and
    each dataset's (acquire.json, extract.json) records, in the same order."""
    title = params["report"]["title"]
    body, md = [f"<h1>{html.escape(title)}</h1>"], [f"# {title}\n"]
    # Findings first: each claim's verdict with its evidence, then what every number was computed with.
    body.append("<h2>Findings</h2><p>One row per claim of arXiv 2510.14411 (and, on synthetic data, per planted "
                "truth). A verdict needs converged runs, at least 3 seeds and p &lt; 0.05; otherwise it is "
                "inconclusive and says why. A rerun with other seeds, thread counts or oneDNN trains other "
                "trajectories: a verdict whose p is near 0.05 may then land on the other side of it, so compare "
                "the effects and their intervals (<code>avbias compare-verdicts</code>).</p>")
    md.append("## Findings\n")
    for a in analyses:
        for name, table in ((f"Findings: {a.dataset}", findings_table(a)),
                            (f"Protocol: {a.dataset}", protocol_table(a, params))):
            body.append(f"<h3>{html.escape(name)}</h3>" + table.to_html(index=False, border=0, escape=True))
            md.append(f"### {name}\n\n{markdown(table)}")
    overview = method_dataset_table(analyses)
    body.append("<h2>Test accuracy, method × dataset</h2><p>Test accuracy at the selected epoch (see Protocol), "
                "mean ± std over seeds; in brackets each branch's accuracy through the fused head (audio / visual).</p>"
                + overview.to_html(index=False, border=0))
    md.append(f"## Test accuracy, method × dataset\n\n{markdown(overview)}")
    for a, (acquired, extracted) in zip(analyses, data, strict=True):
        body.append(f"<h2>{html.escape(a.dataset)}</h2><p>{verdict_text(a)}</p>")
        md.append(f"## {a.dataset}\n")
        sections = (("Data", data_table(acquired, extracted)), ("Convergence", convergence_table(a)),
                    ("Accuracy", accuracy_table(a)),
                    ("Decision-layer bias (test split)", bias_table(a)),
                    ("Persistence of the bias across methods", persistence_table(a)),
                    ("Decision-layer remedies (fit on validation, tested on test)", remedies_table(a)),
                    (CALIBRATION, calibration_table(a)))
        for name, table in sections:
            note = f"<p>{SECTION_NOTES[name]}</p>" if name in SECTION_NOTES else ""
            body.append(f"<h3>{name}</h3>{note}" + table.to_html(index=False, border=0, escape=True))
            md.append(f"### {name}\n\n{SECTION_NOTES.get(name, '')}\n\n{markdown(table)}")
        write_plot_data(a, out_dir)
        for name, draw in FIGURES.items():
            path = out_dir / "figures" / f"{a.dataset}_{name}.png"
            caption = draw(a, path)
            png = base64.b64encode(path.read_bytes()).decode()
            body.append(f'<figure><img alt="{name}" src="data:image/png;base64,{png}">'
                        f"<figcaption>{html.escape(caption)}</figcaption></figure>")
            md.append(f"![{caption}](report/figures/{path.name})\n")
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{STYLE}</style></head><body>{''.join(body)}</body></html>\n")
    with atomic_path(out_dir / "report.html") as tmp:
        tmp.write_text(page)
    with atomic_path(summary_md) as tmp:
        tmp.write_text("\n".join(md))
    write_json(metrics_json, {a.dataset: metrics_for_dvc(a) for a in analyses})
