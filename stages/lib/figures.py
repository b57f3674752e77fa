"""The report's figures in the report's language, drawn from the data files the other stages
write: dvclive's curves, the confusion counts, the t-SNE coordinates and the accuracies. Every
title, axis label, legend, tick label and class name comes from the wording
(stages/templates/wording/<language>.yaml, through `lang`, a wording.Language); the numbers are
written the language's way, accuracies in percent as the text gives them, a loss that spans
orders of magnitude on a log axis. The stages' own PNGs, in English, keep serving `dvc plots`.

Each function draws one figure into `folder` and returns its file name."""
import csv
from pathlib import Path

import numpy as np
from matplotlib.ticker import FuncFormatter, NullFormatter, ScalarFormatter

from . import analysis, plots, png
from .core.common import StageError
from .png import plt

LOG_SPREAD = 10   # a loss axis whose values span more than this factor is drawn logarithmic


def read_rows(path, delimiter=","):
    """The rows of a CSV or TSV file a stage wrote, as dicts; one line if it is missing."""
    path = Path(path)
    if not path.is_file():
        raise StageError(f"{path} not found: run the stage that writes it first (dvc repro)")
    with open(path, newline="") as f:
        return list(csv.DictReader(f, delimiter=delimiter))


def read_curves(live_dir):
    """Per-epoch rows {epoch, train_loss, train_accuracy, val_loss, val_accuracy} from the
    dvclive TSV files of a training stage."""
    columns = {}
    for split in ("train", "val"):
        for what in ("loss", "accuracy"):
            rows = read_rows(Path(live_dir) / "plots" / "metrics" / split / f"{what}.tsv", "\t")
            columns[f"{split}_{what}"] = [float(row[what]) for row in rows]
            epochs = [int(row["step"]) for row in rows]   # dvclive's step is the epoch
    return [{"epoch": epoch, **{k: v[i] for k, v in columns.items()}}
            for i, epoch in enumerate(epochs)]


def read_confusion(path):
    """A stage's confusion.csv (actual, predicted, count: every cell) as (classes, matrix),
    the classes in the file's order."""
    rows = read_rows(path)
    classes = list(dict.fromkeys(row["actual"] for row in rows))
    index = {name: i for i, name in enumerate(classes)}
    matrix = np.zeros((len(classes), len(classes)), dtype=np.int64)
    for row in rows:
        matrix[index[row["actual"]], index[row["predicted"]]] = int(row["count"])
    return classes, matrix


def read_tsne(path, group):
    """A t-SNE coordinates file (tsne.csv: `group`, index, x, y, label, class) as
    {group value: (coords (n, 2), labels (n,))}. The labels index the dataset's class list
    (metrics/datasets.json), which also names a class no point of the sample belongs to."""
    points = {}
    for row in read_rows(path):
        points.setdefault(row[group], []).append(row)
    return {key: (np.array([[float(r["x"]), float(r["y"])] for r in kept]),
                  np.array([int(r["label"]) for r in kept]))
            for key, kept in points.items()}


def words(lang):
    """plots.WORDS in the report's language."""
    return {key: lang.say(f"figures.{key}") for key in plots.WORDS}


def translated(lang, dataset, classes):
    """The class names of `dataset` in the report's language."""
    return [lang.class_name(dataset, c) for c in classes]


def save(fig, lang, folder, name):
    decimal_ticks(fig, lang.decimal)
    png.save(fig, Path(folder) / name)
    return name


def curves(lang, folder, name, live_dir, title):
    """Training and validation loss and accuracy per epoch."""
    fig = plots.curves_figure(read_curves(live_dir), title, words(lang))
    return save(readable(fig, lang), lang, folder, name)


def confusion(lang, folder, name, counts, dataset, title):
    """A confusion matrix with counts; counts: read_confusion's (classes, matrix)."""
    classes, matrix = counts
    fig = plots.confusion_figure(matrix, translated(lang, dataset, classes), title, words(lang))
    return save(fig, lang, folder, name)


def tsne(lang, folder, name, coords, labels, classes, dataset, title):
    """One t-SNE scatter plot, coloured by class, with its legend in the language."""
    fig = analysis.tsne_figure(coords, labels, translated(lang, dataset, classes), title)
    return save(fig, lang, folder, name)


def tsne_grid(lang, folder, name, panels, classes, dataset, title):
    """panels: [(coords, labels, subtitle)], one shared legend."""
    fig = analysis.tsne_grid(panels, translated(lang, dataset, classes), title)
    return save(fig, lang, folder, name)


def validation_curves(lang, folder, name, runs):
    """runs: {label: live dir}: validation loss and accuracy per epoch, one line per run."""
    series = {label: [(r["epoch"], r["val_loss"], r["val_accuracy"]) for r in read_curves(live)]
              for label, live in runs.items()}
    fig = plots.lines_figure(series, lang.say("figures.epoch"),
                             (lang.say("figures.val_loss"), lang.say("figures.val_accuracy")))
    handles, labels = fig.axes[0].get_legend_handles_labels()
    for ax in fig.axes:   # one legend under both charts: long names would cover the lines
        ax.get_legend().remove()
    fig.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, 0.0), frameon=False,
               ncol=1 if max(map(len, labels)) > 30 else min(len(labels), 3))
    return save(readable(fig, lang), lang, folder, name)


def readable(fig, lang):
    """A plots.lines_figure (loss left, accuracy right) with the accuracy in percent and the
    loss on a log axis where its values span more than LOG_SPREAD times (a model that diverged
    to 4,000 would flatten the others into the floor)."""
    loss_ax, accuracy_ax = fig.axes
    percent_axis(accuracy_ax.yaxis, lang)
    losses = [y for line in loss_ax.get_lines() for y in line.get_ydata() if y > 0]
    if losses and max(losses) > LOG_SPREAD * min(losses):
        loss_ax.set_yscale("log")
        loss_ax.yaxis.set_major_formatter(ScalarFormatter())   # 10, not 10^1: decimal_ticks
        loss_ax.yaxis.set_minor_formatter(NullFormatter())
    return fig


def percent_axis(axis, lang):
    """Tick labels of an axis of fractions written as percentages, the language's way."""
    axis.set_major_formatter(FuncFormatter(
        lambda value, _: f"{100 * value:.{0 if axis.get_view_interval()[1] > 0.1 else 1}f} %"
        .replace(".", lang.decimal)))


def bars(lang, folder, name, values, title, xlabel):
    """values: {label: accuracy}, one bar each, labelled as a percentage."""
    fig = bar_figure(values, title, xlabel, lang.pct)
    percent_axis(fig.axes[0].xaxis, lang)
    return save(fig, lang, folder, name)


def confusion_grid(lang, folder, name, panels, dataset):
    """panels: [(title, (classes, matrix))], two to a row, each as large as one matrix alone
    (part 3's four strategies, readable on a printed page)."""
    cols = min(len(panels), 2)
    rows = -(-len(panels) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5.2 * cols, 4.6 * rows), squeeze=False)
    for ax, (title, (classes, matrix)) in zip(axes.flat, panels):
        plots.confusion_axes(ax, matrix, translated(lang, dataset, classes), title, words(lang))
        for count in ax.texts:   # the counts, readable at half a page's width
            count.set_fontsize(16 if len(classes) <= 4 else 9)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.tight_layout()
    return save(fig, lang, folder, name)


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
    for ax in fig.axes:
        for axis in (ax.xaxis, ax.yaxis):
            if isinstance(axis.get_major_formatter(), ScalarFormatter):
                axis.set_major_formatter(FuncFormatter(
                    lambda value, _: f"{value:g}".replace(".", decimal).replace("-", "\u2212")))
