"""Report figures (matplotlib, PNG). Each function draws one figure and returns its caption."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from avbias.analyse.contract import BASELINE, DatasetAnalysis, is_joint  # noqa: E402

COLOURS = {"audio": "#1f77b4", "visual": "#ff7f0e", "fused": "#555555"}


def _save(fig: plt.Figure, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    # No date metadata: the same numbers give the same bytes.
    fig.savefig(path, dpi=110, metadata={"Software": None})
    plt.close(fig)


def _modality_bars(ax: plt.Axes, labels: list[str], values: dict[str, tuple[list[float], list[float]]],
                   ylabel: str) -> None:
    """Side-by-side bars, one colour per modality: values[m] = (means, stds) over the labels."""
    x = np.arange(len(labels))
    width = 0.8 / len(values)
    for i, (m, (means, stds)) in enumerate(values.items()):
        ax.bar(x + (i - (len(values) - 1) / 2) * width, means, width, yerr=stds, capsize=3, label=m,
               color=COLOURS.get(m))
    ax.set_xticks(x, labels, fontsize=8)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=8)


def accuracy_bars(a: DatasetAnalysis, path: Path) -> str:
    methods = list(a.runs["method"].unique())
    modalities_of = dict(zip(a.runs["method"], a.runs["modalities"], strict=True))
    joint = dict(zip(a.runs["method"], is_joint(a.runs["modalities"]), strict=True))
    series = ["fused", *a.modalities]
    x = np.arange(len(methods))
    width = 0.8 / len(series)

    def measure(method: str, s: str) -> str | None:
        unimodal = None if joint[method] else modalities_of[method]
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
    key = f"weight_norm_{a.modalities[0]}" if a.modalities else None
    methods = [m for m in a.joint_methods
               if key in a.per_class and a.per_class.loc[a.per_class["method"] == m, key].notna().any()]
    if not methods:
        return _no_data(a, path, "no joint runs with linear decision weights")
    cols = min(4, len(methods))
    rows_n = -(-len(methods) // cols)
    fig, axes = plt.subplots(rows_n, cols, figsize=(4.2 * cols, 3.0 * rows_n), squeeze=False)
    for ax in list(axes.flat)[len(methods):]:
        ax.axis("off")
    for ax, method in zip(axes.flat, methods, strict=False):
        rows = a.per_class[a.per_class["method"] == method].groupby("class", sort=False)
        values = {m: (rows[f"weight_norm_{m}"].mean().tolist(), rows[f"weight_norm_{m}"].std().fillna(0).tolist())
                  for m in a.modalities}
        _modality_bars(ax, list(rows.groups), values, "‖W_m,c‖ (L2 of class row)")
        ax.set_title(method)
    _save(fig, path)
    return (f"{a.dataset}: L2 norm of each class's row of the decision weights, split into the audio and visual "
            "blocks (mean ± std over seeds).")


def logit_contributions(a: DatasetAnalysis, path: Path) -> str:
    methods = [m for m in a.joint_methods if a.modalities and a.stat(m, f"logit_contrib_{a.modalities[0]}") is not None]
    if not methods:
        return _no_data(a, path, "no joint runs with an additive head")
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
    column = "val_acc" if "val_acc" in a.curves and a.curves["val_acc"].notna().any() else "train_acc"
    methods = list(dict.fromkeys(a.curves["method"]))
    cols = min(4, len(methods))
    rows_n = -(-len(methods) // cols)
    fig, axes = plt.subplots(rows_n, cols, figsize=(3.0 * cols, 2.3 * rows_n), squeeze=False, sharex=True, sharey=True)
    for ax in list(axes.flat)[len(methods):]:
        ax.axis("off")
    for ax, method in zip(axes.flat, methods, strict=False):     # one panel per method: no legend to decode
        group = a.curves[a.curves["method"] == method]
        for _, run in group.groupby("seed"):
            ax.plot(run["epoch"], run[column] * 100, color="#bbbbbb", lw=0.8)
        curve = group.groupby("epoch")[column].mean() * 100
        ax.plot(curve.index, curve.to_numpy(), color="k", lw=1.5)
        start = curve.index[len(curve) - max(int(round(len(curve) * 0.25)), 3)] if len(curve) >= 3 else curve.index[0]
        ax.axvspan(start, curve.index[-1], color="#fde9c9", lw=0)
        ax.set_title(method, fontsize=9)
    for ax in axes[-1]:
        ax.set_xlabel("epoch")
    for ax in axes[:, 0]:
        ax.set_ylabel(f"{column.replace('_acc', '')} acc (%)")
    _save(fig, path)
    what = "validation" if column == "val_acc" else "training (no validation split)"
    return (f"{a.dataset}: {what} accuracy per epoch, one panel per method: each seed (grey) and their mean (black). "
            "Shaded: the last quarter of the epochs, over which a converged curve rises by less than 2 points.")


def _no_data(a: DatasetAnalysis, path: Path, what: str) -> str:
    """A placeholder figure (the report keeps one slot per figure) and its caption."""
    fig, ax = plt.subplots(figsize=(4, 1))
    ax.axis("off")
    ax.text(0.5, 0.5, what, ha="center", va="center", fontsize=9)
    _save(fig, path)
    return f"{a.dataset}: {what}."


def feature_norm_histograms(a: DatasetAnalysis, path: Path) -> str:
    methods = [m for m in a.joint_methods if f"feature_norm_{a.modalities[0]}" in a.samples]
    if a.samples.empty or not methods:
        return _no_data(a, path, "no joint runs")
    cols = min(4, len(methods))
    rows = -(-len(methods) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.4 * rows), squeeze=False)
    for ax, method in zip(axes.flat, methods, strict=False):
        s = a.samples[a.samples["method"] == method]
        for m in a.modalities:
            ax.hist(s[f"feature_norm_{m}"].dropna(), bins=20, alpha=0.6, label=m, color=COLOURS.get(m))
        ax.set_title(method, fontsize=9)
        ax.set_xlabel("‖f_m‖", fontsize=8)
    for ax in list(axes.flat)[len(methods):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=8)
    _save(fig, path)
    return (f"{a.dataset}: distribution of the per-sample feature norms ‖f_audio‖ and ‖f_visual‖ on the test split, "
            "per joint method (all seeds pooled).")


def contribution_distributions(a: DatasetAnalysis, path: Path) -> str:
    methods = [m for m in a.joint_methods
               if not a.samples.empty
               and a.samples.loc[a.samples["method"] == m, f"true_contrib_{a.modalities[0]}"].notna().any()]
    if not methods:
        return _no_data(a, path, "no joint runs with an additive head")
    fig, axes = plt.subplots(1, 2, figsize=(max(7, 1.2 * len(methods) * 2), 3.4))
    for ax, (kind, title) in zip(axes, (("true_contrib", "to the true-class logit"),
                                        ("margin_contrib", "to the margin z_y - z_k")), strict=True):
        positions, data, colours = [], [], []
        for i, method in enumerate(methods):
            s = a.samples[a.samples["method"] == method]
            for j, m in enumerate(a.modalities):
                positions.append(i * (len(a.modalities) + 1) + j)
                data.append(s[f"{kind}_{m}"].dropna().to_numpy())
                colours.append(COLOURS.get(m))
        parts = ax.boxplot(data, positions=positions, widths=0.8, patch_artist=True, showfliers=False)
        for patch, colour in zip(parts["boxes"], colours, strict=True):
            patch.set_facecolor(colour)
        centres = [i * (len(a.modalities) + 1) + (len(a.modalities) - 1) / 2 for i in range(len(methods))]
        ax.set_xticks(centres, [m.replace("_", "\n") for m in methods], fontsize=7)
        ax.axhline(0, color="k", lw=0.5)
        ax.set_title(f"each modality's contribution {title}", fontsize=9)
    _save(fig, path)
    return (f"{a.dataset}: per test sample, each modality's contribution (W_m f_m) to the true-class logit and to the "
            "fused margin over the runner-up class (blue audio, orange visual; boxes: quartiles, all seeds pooled).")


def who_decides_bars(a: DatasetAnalysis, path: Path) -> str:
    methods = [m for m in a.joint_methods if a.modalities and a.stat(m, f"decides_{a.modalities[0]}") is not None]
    if not methods:
        return _no_data(a, path, "no joint runs")
    fig, ax = plt.subplots(figsize=(max(5, 0.9 * len(methods)), 3.2))
    values = {m: ([a.stat(x, f"decides_{m}")[0] * 100 for x in methods],
                  [a.stat(x, f"decides_{m}")[1] * 100 for x in methods])
              for m in a.modalities}
    _modality_bars(ax, [m.replace("_", "\n") for m in methods], values, "fused = modality's prediction (%)")
    _save(fig, path)
    return (f"{a.dataset}: who decides. Among test samples on which the audio and visual branches predict different "
            "classes, the share whose fused prediction follows each branch (mean ± std over seeds).")


def persistence_plot(a: DatasetAnalysis, path: Path) -> str:
    if a.persistence.empty:
        return _no_data(a, path, "no joint runs")
    names = {"weight_share": "‖W‖", "centred_logit_share": "|W f| (class-centred)", "decides_share": "decisions",
             "shapley_feature_share": "Shapley (features zeroed)", "shapley_input_share": "Shapley (inputs zeroed)"}
    measures = [m for m in names if m in set(a.persistence["measure"])]
    methods = list(dict.fromkeys(a.persistence["method"]))
    fig, axes = plt.subplots(1, len(measures), figsize=(2.6 * len(measures) + 1, 3.6), squeeze=False, sharey=True)
    x = np.arange(len(methods))
    for ax, measure in zip(axes.flat, measures, strict=True):    # one panel per measure, methods named on the axis
        rows = a.persistence[a.persistence["measure"] == measure].set_index("method").reindex(methods)
        err = np.array([rows["mean"] - rows["ci_low"], rows["ci_high"] - rows["mean"]]).clip(min=0)
        ax.errorbar(x, rows["mean"], yerr=np.nan_to_num(err), fmt="o", capsize=3, color="k")
        ax.axhline(0.5, color="k", lw=0.6, ls=":")
        ax.set_xticks(x, methods, rotation=90, fontsize=7)
        ax.set_title(names[measure], fontsize=9)
        ax.set_ylim(0, 1)
    axes.flat[0].set_ylabel(f"{a.modalities[0]} share (0.5 = balanced)")
    _save(fig, path)
    return (f"{a.dataset}: persistence of the bias, one panel per measure: the {a.modalities[0]} share of the decision "
            "weight norm, of the class-centred logit contributions, of the decisions where the branches disagree, "
            "and of the Shapley value of accuracy (absent modality's features or inputs zeroed); mean over seeds "
            "with 95% bootstrap CI. No point: the measure does not apply to that method's head.")


def human_vs_model(a: DatasetAnalysis, path: Path) -> str:
    first = a.modalities[0] if a.modalities else "audio"
    cap = a.capability
    # Human raters where the dataset has them (CREMA-D); else the unimodal models' per-class accuracy.
    external = cap[cap["source"] == "human raters"] if not cap.empty else cap
    if external.empty and not cap.empty:
        external = cap[cap["source"] == "unimodal model"]
    snr = cap[cap["source"] == "generator SNR (dB)"] if not cap.empty else cap
    key = f"reliance_share_{first}"
    if external.empty or a.per_class.empty or key not in a.per_class:
        return _no_data(a, path, "no external capability for this dataset")
    source = external["source"].iloc[0]
    ext = external[external["modality"].isin(a.modalities)].pivot_table(index="class", columns="modality",
                                                                        values="value")
    if any(m not in ext for m in a.modalities):
        return _no_data(a, path, f"{source}: not every modality measured")
    ext_share = ext[first] / ext[a.modalities].sum(axis=1)
    classes = list(dict.fromkeys(a.per_class["class"]))
    methods = a.joint_methods
    cols = min(4, len(methods))
    rows_n = -(-len(methods) // cols)
    fig, axes = plt.subplots(rows_n, cols, figsize=(3.4 * cols, 2.6 * rows_n), squeeze=False, sharey=True)
    for ax in list(axes.flat)[len(methods):]:
        ax.axis("off")
    x = np.arange(len(classes))
    for ax, method in zip(axes.flat, methods, strict=False):      # one panel per joint method
        rel = a.per_class[a.per_class["method"] == method].groupby("class")[key].mean().reindex(classes)
        ax.bar(x - 0.2, ext_share.reindex(classes), 0.4, color="#999999")
        ax.bar(x + 0.2, rel, 0.4, color=COLOURS.get(first))
        ax.axhline(0.5, color="k", lw=0.6, ls=":")
        ax.set_xticks(x, classes, fontsize=7)
        ax.set_ylim(0, 1)
        ax.set_title(method, fontsize=9)
    _save(fig, path)
    what = ("the crowd's accuracy from the voice alone vs the face alone (CREMA-D summaryTable.csv), "
            "as the voice's share"
            if source == "human raters" else "the unimodal models' per-class test accuracy, as audio's share")
    if not snr.empty:
        what += "; the generator's planted per-class SNRs are in capability.csv"
    return (f"{a.dataset}: per class, grey: the external capability ({what}); coloured: the model's reliance on "
            f"{first} (its share of mean |W_m f_m| over the class's test samples). One panel per joint method; "
            "a coloured bar below the grey one means the model relies on the first modality less than its capability.")


def per_class_heatmap(a: DatasetAnalysis, path: Path) -> str:
    pc = a.per_class
    if pc.empty:
        return _no_data(a, path, "no runs")
    columns, labels = [], []
    for method in a.runs["method"].unique():
        rows = pc[pc["method"] == method].groupby("class", sort=False)
        columns.append(rows["acc"].mean())
        labels.append(method)
        for m in a.modalities:
            if f"branch_acc_{m}" in pc and rows[f"branch_acc_{m}"].mean().notna().any():
                columns.append(rows[f"branch_acc_{m}"].mean())
                labels.append(f"{method}·{m[0]}")
    matrix = np.array([c.to_numpy() for c in columns]).T * 100
    classes = list(columns[0].index)
    fig, ax = plt.subplots(figsize=(max(6, 0.45 * len(labels)), 0.4 * len(classes) + 1.8))
    image = ax.imshow(matrix, vmin=0, vmax=100, cmap="viridis", aspect="auto")
    ax.set_xticks(range(len(labels)), labels, rotation=90, fontsize=7)
    ax.set_yticks(range(len(classes)), classes, fontsize=8)
    fig.colorbar(image, ax=ax, label="test accuracy (%)")
    _save(fig, path)
    return (f"{a.dataset}: per-class test accuracy (mean over seeds) for every method: the fused prediction, and for "
            "joint models each branch through the fused head (·a audio, ·v visual).")


def remedies_scatter(a: DatasetAnalysis, path: Path) -> str:
    if a.remedies_summary.empty:
        return _no_data(a, path, "no joint runs with a linear head")
    s = a.remedies_summary
    methods = list(dict.fromkeys(s["method"]))
    cols = min(4, len(methods))
    rows_n = -(-len(methods) // cols)
    fig, axes = plt.subplots(rows_n, cols, figsize=(3.6 * cols, 3.0 * rows_n), squeeze=False)
    for ax in list(axes.flat)[len(methods):]:
        ax.axis("off")
    for ax, method in zip(axes.flat, methods, strict=False):      # one panel per method, each remedy named at its point
        rows = s[s["method"] == method].pivot_table(index="remedy", columns="measure", values="mean")
        rows = rows.reindex(columns=["weak_decides", "test_acc"])    # no disagreement: no weak share (NaN)
        if "none" not in rows.index:
            continue
        x0, y0 = rows.loc["none", "weak_decides"] * 100, rows.loc["none", "test_acc"] * 100
        ax.scatter([x0], [y0], marker="s", color="k", zorder=3)
        ax.annotate("none", (x0, y0), fontsize=7, xytext=(3, 3), textcoords="offset points")
        for remedy, r in rows.drop(index="none").iterrows():
            x1, y1 = r["weak_decides"] * 100, r["test_acc"] * 100
            ax.scatter([x1], [y1], s=10, color="#1f77b4", zorder=3)      # also sets the axes' limits
            ax.annotate("", (x1, y1), (x0, y0), arrowprops={"arrowstyle": "->", "color": "#1f77b4", "lw": 0.8})
            ax.annotate(remedy, (x1, y1), fontsize=7, xytext=(3, -8), textcoords="offset points")
        ax.set_title(method, fontsize=9)
        ax.set_xlabel(f"{a.bias.get('weak_modality')} (weak) decides (%)", fontsize=8)
        ax.set_ylabel("test accuracy (%)", fontsize=8)
        ax.margins(0.25)
    _save(fig, path)
    return (f"{a.dataset}: decision-layer remedies (fit on validation, evaluated on test), one panel per joint model "
            "with a linear head: each arrow goes from the model as trained ('none', square) to the same model with a "
            "remedy, in test accuracy and the weak modality's share of the decisions where the branches disagree "
            "(mean over seeds).")


def capability_gap(a: DatasetAnalysis) -> tuple[str, str, pd.Series] | None:
    """The two modalities of the unimodal models (sorted: audio, visual) and per class the first one's test
    accuracy minus the second's (mean over seeds); None without a unimodal model of each of two modalities."""
    uni = a.runs[~is_joint(a.runs["modalities"])]
    method_of = dict(zip(uni["modalities"], uni["method"], strict=True))
    if len(method_of) != 2:
        return None
    first, second = sorted(method_of)
    acc = {m: a.per_class[a.per_class["method"] == method_of[m]].groupby("class", sort=False)["acc"].mean()
           for m in (first, second)}
    return first, second, (acc[first] - acc[second]).reindex(acc[first].index)


def allocation_changes(a: DatasetAnalysis) -> dict[str, pd.Series]:
    """Per class, what each allocation changes against the baseline (test accuracy, mean over seeds), named as
    the claim-3 findings name it: each remedy fit on the baseline minus the baseline as trained (its "none"
    row), and each other joint method minus the baseline. None without a baseline."""
    base = a.per_class[a.per_class["method"] == BASELINE] if len(a.per_class) else a.per_class
    if base.empty:
        return {}
    classes = list(dict.fromkeys(base["class"]))          # the order of the remedies' class_acc_<i> columns
    changes: dict[str, pd.Series] = {}
    remedies = a.remedies[a.remedies["method"] == BASELINE] if len(a.remedies) else a.remedies
    if len(remedies) and "none" in set(remedies["remedy"]):
        acc = remedies.groupby("remedy", sort=False)[[f"class_acc_{i}" for i in range(len(classes))]].mean()
        acc.columns = classes
        for remedy in acc.index.drop("none"):
            changes[f"remedy: {remedy}"] = acc.loc[remedy] - acc.loc["none"]
    base_acc = base.groupby("class")["acc"].mean().reindex(classes)
    for method in a.joint_methods:
        if method != BASELINE:
            rows = a.per_class[a.per_class["method"] == method]
            changes[f"method: {method}"] = rows.groupby("class")["acc"].mean().reindex(classes) - base_acc
    return changes


def claim3_per_class(a: DatasetAnalysis, path: Path) -> str:
    measured = capability_gap(a)
    if measured is None:
        return _no_data(a, path, "no unimodal model of each modality")
    changes = allocation_changes(a)
    if not changes:
        return _no_data(a, path, "no baseline with a remedy or another joint method to compare")
    first, second, gap = measured
    cols = min(4, len(changes))
    rows_n = -(-len(changes) // cols)
    fig, axes = plt.subplots(rows_n, cols, figsize=(3.4 * cols, 2.8 * rows_n), squeeze=False, sharex=True,
                             sharey=True)
    for ax in list(axes.flat)[len(changes):]:
        ax.axis("off")
    for ax, (label, change) in zip(axes.flat, changes.items(), strict=False):   # one panel per allocation
        x, y = gap.reindex(change.index) * 100, change * 100
        colour = [COLOURS[first] if g > 0 else COLOURS[second] if g < 0 else COLOURS["fused"] for g in x]
        ax.scatter(x, y, s=14, zorder=3, color=colour)
        named: dict[tuple[float, float], list[str]] = {}     # every point named; classes on one point share a label
        for name, xi, yi in zip(change.index, x, y, strict=True):
            named.setdefault((round(xi, 6), round(yi, 6)), []).append(str(name))
        for (xi, yi), names in named.items():
            ax.annotate(", ".join(names), (xi, yi), fontsize=7, xytext=(3, 2), textcoords="offset points")
        ax.axhline(0, color="k", lw=0.6)
        ax.axvline(0, color="k", lw=0.6, ls=":")
        ax.set_title(label, fontsize=8)
        ax.margins(0.2)
    for ax in list(axes.flat)[max(len(changes) - cols, 0):len(changes)]:    # the lowest panel of each column
        ax.xaxis.set_tick_params(labelbottom=True)
        ax.set_xlabel(f"{first} − {second} unimodal acc (pts)", fontsize=8)
    for ax in axes[:, 0]:
        ax.set_ylabel("acc change vs baseline (pts)", fontsize=8)
    _save(fig, path)
    return (f"{a.dataset}: claim 3 per class. x: the capability gap, the {first} unimodal model's test accuracy "
            f"minus the {second} one's on that class; y: the accuracy change on that class of each remedy fit on "
            "the baseline (against the baseline as trained) and of each other joint method (against the baseline); "
            f"means over seeds, in points. One panel per allocation, each point a class ({first}'s colour where "
            f"{first} is the more capable, {second}'s where {second} is, grey on a tie). Claim 3 expects gains "
            "above the line on the classes where the overall weaker modality is the more capable one.")


FIGURES = {
    "accuracy": accuracy_bars,
    "weight_norms_per_class": weight_norms_per_class,
    "feature_norm_histograms": feature_norm_histograms,
    "logit_contributions": logit_contributions,
    "contribution_distributions": contribution_distributions,
    "who_decides": who_decides_bars,
    "persistence": persistence_plot,
    "human_vs_model_capability": human_vs_model,
    "per_class_accuracy": per_class_heatmap,
    "remedies": remedies_scatter,
    "validation_curves": validation_curves,
    "claim3_per_class": claim3_per_class,
}
