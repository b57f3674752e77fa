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


# The words inside the figures, English for the stages' own PNGs (`dvc plots`); the report
# draws its figures with the same functions and its language's words (stages/lib/figures.py).
WORDS = {"epoch": "epoch", "loss": "loss", "accuracy": "accuracy", "train": "train",
         "validation": "validation", "actual": "true label", "predicted": "predicted label"}


def confusion_figure(matrix, classes, title, words=WORDS):
    from sklearn.metrics import ConfusionMatrixDisplay

    size = max(4.0, 0.55 * len(classes) + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    ConfusionMatrixDisplay(matrix, display_labels=classes).plot(
        ax=ax, cmap="Blues", colorbar=False, xticks_rotation=45 if len(classes) > 4 else 0,
        values_format="d")
    ax.set_xlabel(words["predicted"])
    ax.set_ylabel(words["actual"])
    ax.set_title(title)
    return fig


def write_confusion(out_dir, labels, preds, classes, title):
    """Evaluate predictions and write out_dir/confusion.csv (actual, predicted, count: every
    cell of the matrix, zeros included, for the project's `confusion_counts` DVC template) and
    out_dir/confusion.png (counts). Returns the metrics of analysis.evaluation_metrics:
    accuracy, per-class accuracy, top confusions."""
    from . import analysis
    from .core.names import check_class_name

    for name in classes:   # checked at download; again here, where they reach CSV and pages
        check_class_name(name, "the evaluated model")
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


def write_evaluation(out_dir, metrics_path, labels, preds, classes, title, details, best=None):
    """write_confusion, then two files: `metrics_path` with the headline numbers only (what
    `dvc metrics show` and `dvc exp show` put in columns): the accuracy of these predictions,
    so that it always equals the confusion counts, and for a trained model the `best` epoch's
    accuracy and number (analysis.summarize's); and out_dir/evaluation.json with the `details`,
    per-class accuracy and the most frequent confusions (what the report reads).
    Returns the evaluation."""
    from .core.files import write_json

    evaluation = write_confusion(out_dir, labels, preds, classes, title)
    write_json(metrics_path, {"accuracy": evaluation["accuracy"]}
               | ({"best_accuracy": best["best_accuracy"], "best_epoch": best["best_epoch"]}
                  if best else {}))
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

    from .core.files import write_json

    for name, v in judged.items():
        write_json(Path(metrics_dir) / f"{name}.json", {k: v[k] for k in SCORES})
    write_json(details_path, {**{name: {k: x for k, x in v.items() if k not in SCORES}
                                 for name, v in judged.items()}, "settings": settings})


def read_scores(metrics_dir, details_path, names):
    """What write_scores wrote, as one record: {name: scores and details, "settings": ...}."""
    from pathlib import Path

    from .core.files import read_json

    details = read_json(details_path)
    return {**{name: {**read_json(Path(metrics_dir) / f"{name}.json"), **details[name]}
               for name in names}, "settings": details["settings"]}


def curves_figure(history, title, words=WORDS):
    """Loss and accuracy per epoch, train and validation overlaid."""
    return lines_figure({words[split]: [(r["epoch"], r[f"{prefix}_loss"], r[f"{prefix}_accuracy"])
                                        for r in history]
                         for split, prefix in (("train", "train"), ("validation", "val"))},
                        words["epoch"], (words["loss"], words["accuracy"]), title)


def lines_figure(series, xlabel, ylabels, title=None):
    """Loss (left) and accuracy (right) per epoch, one line per entry of `series`:
    {label: [(epoch, loss, accuracy), ...]}; ylabels: (loss's, accuracy's)."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for column, (ax, ylabel) in enumerate(zip(axes, ylabels), start=1):
        for label, rows in series.items():
            ax.plot([r[0] for r in rows], [r[column] for r in rows], "o-", label=label)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        integer_epochs(ax)
        ax.grid(alpha=0.3)
        ax.legend()
    if title is not None:
        fig.suptitle(title)
    return fig


def integer_epochs(ax):
    """Ticks on whole epochs only (a run of 1 or 2 epochs would get 1.25, 1.5, ...)."""
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))   # one epoch too


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


def bar_figure(values, title, xlabel, number="{:.3f}".format):
    """values: {name: number between 0 and 1}, one horizontal bar each, top to bottom, labelled
    with `number`(value) (long names fit on the left)."""
    fig, ax = plt.subplots(figsize=(7, 0.5 * len(values) + 1.4))
    names = list(values)[::-1]
    bars = ax.barh(names, [values[n] for n in names], color="tab:blue")
    ax.bar_label(bars, labels=[number(values[n]) for n in names], padding=3)
    ax.set_xlim(0, 1.15)
    ax.set_xlabel(xlabel)
    ax.set_title(title)
    return fig


def decimal_ticks(fig, decimal):
    """Write the numbers on every numeric axis of `fig` with `decimal` as the decimal mark
    (matplotlib writes 0.5 whatever the language)."""
    from matplotlib.ticker import FuncFormatter, ScalarFormatter

    for ax in fig.axes:
        for axis in (ax.xaxis, ax.yaxis):
            if isinstance(axis.get_major_formatter(), ScalarFormatter):
                axis.set_major_formatter(FuncFormatter(
                    lambda value, _: f"{value:g}".replace(".", decimal).replace("-", "\u2212")))
