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


def accuracy_bars(a: DatasetAnalysis, path: Path) -> str:
    methods = list(a.runs["method"].unique())
    series = ["fused", *a.modalities]
    x = np.arange(len(methods))
    width = 0.8 / len(series)
    fig, ax = plt.subplots(figsize=(max(5, 1.4 * len(methods)), 3.4))
    for i, s in enumerate(series):
        stats = [a.stat(m, "test_acc" if s == "fused" else f"branch_acc_{s}") for m in methods]
        means = [st[0] * 100 if st else np.nan for st in stats]
        stds = [st[1] * 100 if st else 0 for st in stats]
        ax.bar(x + (i - (len(series) - 1) / 2) * width, means, width, yerr=stds, capsize=3,
               label="model (fused)" if s == "fused" else f"{s} branch", color=COLOURS.get(s))
    ax.axhline(100 / len(a.per_class["class"].unique()) if not a.per_class.empty else 0, color="k", lw=0.6, ls=":")
    ax.set_xticks(x, methods)
    ax.set_ylabel("test accuracy (%)")
    ax.set_ylim(0, 100)
    ax.legend(fontsize=8)
    _save(fig, path)
    return (f"{a.dataset}: test accuracy per method (mean ± std over seeds). For joint models, each branch's "
            "accuracy is its own logits W_m f_m + b/2 through the fused head; unimodal models show the fused bar "
            "only. Dotted line: chance.")


def weight_norms_per_class(a: DatasetAnalysis, path: Path) -> str:
    methods = list(a.per_class["method"].unique())
    fig, axes = plt.subplots(1, len(methods), figsize=(4.2 * len(methods), 3.2), squeeze=False)
    for ax, method in zip(axes[0], methods):
        rows = a.per_class[a.per_class["method"] == method].groupby("class", sort=False)
        classes = list(rows.groups)
        x = np.arange(len(classes))
        for i, m in enumerate(a.modalities):
            mean, std = rows[f"weight_norm_{m}"].mean(), rows[f"weight_norm_{m}"].std().fillna(0)
            ax.bar(x + (i - 0.5) * 0.4, mean.to_numpy(), 0.4, yerr=std.to_numpy(), capsize=2, label=m, color=COLOURS.get(m))
        ax.set_xticks(x, classes, fontsize=8)
        ax.set_title(method)
        ax.set_ylabel("‖W_m,c‖ (L2 of class row)")
        ax.legend(fontsize=8)
    _save(fig, path)
    return (f"{a.dataset}: L2 norm of each class's row of the decision weights, split into the audio and visual "
            "blocks (mean ± std over seeds).")


def logit_contributions(a: DatasetAnalysis, path: Path) -> str:
    methods = list(a.bias["dominance"])
    x = np.arange(len(methods))
    fig, ax = plt.subplots(figsize=(max(4, 1.6 * len(methods)), 3.2))
    for i, m in enumerate(a.modalities):
        stats = [a.stat(method, f"logit_contrib_{m}") for method in methods]
        ax.bar(x + (i - 0.5) * 0.4, [s[0] for s in stats], 0.4, yerr=[s[1] for s in stats], capsize=3,
               label=m, color=COLOURS.get(m))
    ax.set_xticks(x, methods)
    ax.set_ylabel("mean |W_m f_m| over test samples, classes")
    ax.legend(fontsize=8)
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
