"""Matplotlib figures (PNG) for what DVC's own plots cannot show offline: confusion matrices
with counts, training curves, t-SNE scatter plots."""
import csv

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def save(fig, path):
    fig.savefig(path, dpi=100, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)


def confusion_figure(matrix, classes, title):
    from sklearn.metrics import ConfusionMatrixDisplay

    size = max(4.0, 0.55 * len(classes) + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    ConfusionMatrixDisplay(matrix, display_labels=classes).plot(
        ax=ax, cmap="Blues", colorbar=False, xticks_rotation=45 if len(classes) > 4 else 0,
        values_format="d")
    ax.set_title(title)
    return fig


def write_confusion(out_dir, labels, preds, classes, title):
    """Evaluate predictions and write out_dir/confusion.csv (actual, predicted, count: every
    cell of the matrix, zeros included, for the project's `confusion_counts` DVC template) and
    out_dir/confusion.png (counts). Returns the metrics of analysis.evaluation_metrics:
    accuracy, per-class accuracy, top confusions."""
    from . import analysis

    matrix, metrics = analysis.evaluation_metrics(labels, preds, classes)
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / "confusion.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["actual", "predicted", "count"])
        writer.writerows((actual, predicted, int(matrix[i, j]))
                         for i, actual in enumerate(classes)
                         for j, predicted in enumerate(classes))
    save(confusion_figure(matrix, classes, title), out_dir / "confusion.png")
    return metrics


def write_evaluation(out_dir, metrics_path, labels, preds, classes, title, headline, details):
    """write_confusion, then two files: `metrics_path` with the `headline` numbers only (what
    `dvc metrics show` and `dvc exp show` put in columns), and out_dir/evaluation.json with the
    `details`, per-class accuracy and the most frequent confusions (what the report reads).
    Returns the evaluation."""
    from .files import write_json

    evaluation = write_confusion(out_dir, labels, preds, classes, title)
    write_json(metrics_path, headline)
    write_json(out_dir / "evaluation.json",
               {**details, "per_class_accuracy": evaluation["per_class_accuracy"],
                "top_confusions": evaluation["top_confusions"]})
    return evaluation


SCORES = ("silhouette", "probe")   # the keys of every metrics/tsne/**.json


def write_scores(metrics_dir, details_path, judged, settings):
    """The separability of representations (`judged`: {name: analysis.judge(...) + extras}):
    one file per representation, metrics_dir/<name>.json, with its silhouette and linear-probe
    accuracy (SCORES: the same two columns for every representation in `dvc metrics show`),
    and `details_path` with everything else of each and the `settings`."""
    from pathlib import Path

    from .files import write_json

    for name, v in judged.items():
        write_json(Path(metrics_dir) / f"{name}.json", {k: v[k] for k in SCORES})
    write_json(details_path, {**{name: {k: x for k, x in v.items() if k not in SCORES}
                                 for name, v in judged.items()}, "settings": settings})


def read_scores(metrics_dir, details_path, names):
    """What write_scores wrote, as one record: {name: scores and details, "settings": ...}."""
    from pathlib import Path

    from .files import read_json

    details = read_json(details_path)
    return {**{name: {**read_json(Path(metrics_dir) / f"{name}.json"), **details[name]}
               for name in names}, "settings": details["settings"]}


def curves_figure(history, title):
    """Loss and accuracy per epoch, train and validation overlaid."""
    epochs = [r["epoch"] for r in history]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for ax, what in zip(axes, ("loss", "accuracy")):
        ax.plot(epochs, [r[f"train_{what}"] for r in history], "o-", label="train")
        ax.plot(epochs, [r[f"val_{what}"] for r in history], "o-", label="validation")
        ax.set_xlabel("epoch")
        ax.set_ylabel(what)
        integer_epochs(ax)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    return fig


def integer_epochs(ax):
    """Ticks on whole epochs only (a run of 1 or 2 epochs would get 1.25, 1.5, ...)."""
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def tsne_axes(ax, coords, labels, classes, title):
    cmap = plt.get_cmap("tab10" if len(classes) <= 10 else "tab20")
    for i, name in enumerate(classes):
        mask = np.asarray(labels) == i
        ax.scatter(coords[mask, 0], coords[mask, 1], s=4 if len(labels) > 1000 else 14,
                   color=cmap(i % cmap.N), label=name, alpha=0.7, linewidths=0)
    ax.set_title(title, fontsize=10)
    ax.set_xticks([])
    ax.set_yticks([])


def tsne_figure(coords, labels, classes, title):
    fig, ax = plt.subplots(figsize=(6.4, 5.6))
    tsne_axes(ax, coords, labels, classes, title)
    ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), markerscale=3 if len(labels) > 1000
              else 1.5, fontsize=9, frameon=False)
    return fig


def tsne_grid(panels, classes, title):
    """panels: [(coords, labels, subtitle)], laid out in a grid with one shared legend."""
    cols = min(len(panels), 2)
    rows = -(-len(panels) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 4.4 * rows), squeeze=False)
    for ax, (coords, labels, subtitle) in zip(axes.flat, panels):
        tsne_axes(ax, coords, labels, classes, subtitle)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    handles, names = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, names, loc="lower center", ncol=min(len(classes), 5), markerscale=2,
               frameon=False)
    fig.suptitle(title)
    fig.tight_layout(rect=(0, 0.06, 1, 0.97))
    return fig


def bar_figure(values, title, ylabel):
    """values: {name: number}."""
    fig, ax = plt.subplots(figsize=(6, 3.6))
    names = list(values)
    bars = ax.bar(names, [values[n] for n in names], color="tab:blue")
    ax.bar_label(bars, fmt="%.3f")
    ax.set_ylim(0, 1.05)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    return fig
