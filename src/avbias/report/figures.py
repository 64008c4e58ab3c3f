"""Report figures (matplotlib, PNG). Each function draws one figure and returns its caption."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from avbias.report.tables import DatasetAnalysis  # noqa: E402

COLOURS = {"audio": "#1f77b4", "visual": "#ff7f0e", "fused": "#555555"}


def _save(fig: plt.Figure, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    # No date metadata: the same numbers give the same bytes.
    fig.savefig(path, dpi=110, metadata={"Software": None})
    plt.close(fig)


def _modality_bars(ax: plt.Axes, labels: list[str], values: dict[str, tuple[list[float], list[float]]], ylabel: str) -> None:
    """Side-by-side bars, one colour per modality: values[m] = (means, stds) over the labels."""
    x = np.arange(len(labels))
    width = 0.8 / len(values)
    for i, (m, (means, stds)) in enumerate(values.items()):
        ax.bar(x + (i - (len(values) - 1) / 2) * width, means, width, yerr=stds, capsize=3, label=m, color=COLOURS.get(m))
    ax.set_xticks(x, labels, fontsize=8)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=8)


def accuracy_bars(a: DatasetAnalysis, path: Path) -> str:
    methods = list(a.runs["method"].unique())
    modalities_of = dict(zip(a.runs["method"], a.runs["modalities"]))
    series = ["fused", *a.modalities]
    x = np.arange(len(methods))
    width = 0.8 / len(series)

    def measure(method: str, s: str) -> str | None:
        unimodal = modalities_of[method] if "+" not in modalities_of[method] else None
        if unimodal:       # a unimodal model's accuracy is drawn in its modality's colour
            return "test_acc" if s == unimodal else None
        return "test_acc" if s == "fused" else f"branch_acc_{s}"

    fig, ax = plt.subplots(figsize=(max(6.5, 2.0 * len(methods)), 3.4))
    for i, s in enumerate(series):
        stats = [a.stat(m, key) if (key := measure(m, s)) else None for m in methods]
        means = [st[0] * 100 if st else np.nan for st in stats]
        stds = [st[1] * 100 if st else 0 for st in stats]
        ax.bar(x + (i - (len(series) - 1) / 2) * width, means, width, yerr=stds, capsize=3,
               label="joint model (fused)" if s == "fused" else s, color=COLOURS.get(s))
    if not a.per_class.empty:
        ax.axhline(100 / a.per_class["class"].nunique(), color="k", lw=0.6, ls=":")
    ax.set_xticks(x, [m.replace("_", "\n") for m in methods])
    ax.set_ylabel("test accuracy (%)")
    ax.set_ylim(0, 105)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    _save(fig, path)
    return (f"{a.dataset}: test accuracy per method (mean ± std over seeds). Joint models: the fused prediction and "
            "each branch's own logits W_m f_m + b/2 through the fused head. Unimodal models: one bar in their "
            "modality's colour. Dotted line: chance.")


def weight_norms_per_class(a: DatasetAnalysis, path: Path) -> str:
    methods = list(a.per_class["method"].unique())
    fig, axes = plt.subplots(1, len(methods), figsize=(4.2 * len(methods), 3.2), squeeze=False)
    for ax, method in zip(axes[0], methods):
        rows = a.per_class[a.per_class["method"] == method].groupby("class", sort=False)
        values = {m: (rows[f"weight_norm_{m}"].mean().tolist(), rows[f"weight_norm_{m}"].std().fillna(0).tolist())
                  for m in a.modalities}
        _modality_bars(ax, list(rows.groups), values, "‖W_m,c‖ (L2 of class row)")
        ax.set_title(method)
    _save(fig, path)
    return (f"{a.dataset}: L2 norm of each class's row of the decision weights, split into the audio and visual "
            "blocks (mean ± std over seeds).")


def logit_contributions(a: DatasetAnalysis, path: Path) -> str:
    methods = list(a.bias["dominance"])
    fig, ax = plt.subplots(figsize=(max(4, 1.6 * len(methods)), 3.2))
    values = {}
    for m in a.modalities:
        stats = [a.stat(method, f"logit_contrib_{m}") or (np.nan, 0.0) for method in methods]
        values[m] = ([st[0] for st in stats], [st[1] for st in stats])
    _modality_bars(ax, [m.replace("_", "\n") for m in methods], values, "mean |W_m f_m| over test samples, classes")
    _save(fig, path)
    return (f"{a.dataset}: how far each modality moves the logits: mean absolute contribution W_m f_m over test "
            "samples and classes (mean ± std over seeds).")


def validation_curves(a: DatasetAnalysis, path: Path) -> str:
    fig, ax = plt.subplots(figsize=(5, 3.2))
    for method, group in a.curves.groupby("method", sort=False):
        curve = group.groupby("epoch")["val_acc"].mean() * 100
        ax.plot(curve.index, curve.to_numpy(), marker=".", label=method)
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation accuracy (%)")
    ax.legend(fontsize=8)
    _save(fig, path)
    return f"{a.dataset}: validation accuracy per epoch (mean over seeds); the best epoch on validation is the one tested."


FIGURES = {
    "accuracy": accuracy_bars,
    "weight_norms_per_class": weight_norms_per_class,
    "logit_contributions": logit_contributions,
    "validation_curves": validation_curves,
}
