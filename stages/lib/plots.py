"""What a training stage writes besides its model: training curves and confusion matrices
with counts as PNGs (what DVC's own plots cannot show offline), the confusion counts as CSV, and
the evaluation's numbers (metrics and details). The t-SNE figures are analysis.py's, the
report's own figures figures.py's."""
from matplotlib.ticker import MaxNLocator
from sklearn.metrics import ConfusionMatrixDisplay

from . import evaluation, png
from .core.files import write_csv, write_json
from .core.names import check_class_name
from .png import plt

# The words inside the figures, English for the stages' own PNGs (`dvc plots`); the report
# draws its figures with the same functions and its language's words (stages/lib/figures.py).
WORDS = {"epoch": "epoch", "loss": "loss", "accuracy": "accuracy", "train": "train",
         "validation": "validation", "actual": "true label", "predicted": "predicted label"}


def confusion_figure(matrix, classes, title, words=WORDS):
    size = max(4.0, 0.55 * len(classes) + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    confusion_axes(ax, matrix, classes, title, words)
    return fig


def confusion_axes(ax, matrix, classes, title, words=WORDS):
    """A confusion matrix with its counts drawn on `ax`."""
    ConfusionMatrixDisplay(matrix, display_labels=png.names(classes)).plot(
        ax=ax, cmap="Blues", colorbar=False, xticks_rotation=45 if len(classes) > 4 else 0,
        values_format="d")
    ax.set_xlabel(words["predicted"])
    ax.set_ylabel(words["actual"])
    ax.set_title(title)


def write_confusion(out_dir, labels, preds, classes, title):
    """Evaluate predictions and write out_dir/confusion.csv (actual, predicted, count: every
    cell of the matrix, zeros included, for the project's `confusion_counts` DVC template) and
    out_dir/confusion.png (counts). Returns the metrics of evaluation.evaluation_metrics:
    accuracy, per-class accuracy, top confusions."""
    for name in classes:   # checked at download; again here, where they reach CSV and pages
        check_class_name(name, "the evaluated model")
    matrix, metrics = evaluation.evaluation_metrics(labels, preds, classes)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_csv(out_dir / "confusion.csv", ["actual", "predicted", "count"],
              ((actual, predicted, int(matrix[i, j]))
               for i, actual in enumerate(classes) for j, predicted in enumerate(classes)))
    png.save(confusion_figure(matrix, classes, title), out_dir / "confusion.png")
    return metrics


def write_evaluation(out_dir, metrics_path, labels, preds, classes, title, details, best=None):
    """write_confusion, then two files: `metrics_path` with the headline numbers only (what
    `dvc metrics show` and `dvc exp show` put in columns): the accuracy of these predictions,
    so that it always equals the confusion counts, and for a trained model the `best` epoch's
    accuracy and number (evaluation.summarize's); and out_dir/evaluation.json with the `details`,
    per-class accuracy and the most frequent confusions (what the report reads).
    Returns the evaluation."""
    evaluated = write_confusion(out_dir, labels, preds, classes, title)
    write_json(metrics_path, {"accuracy": evaluated["accuracy"]}
               | ({"best_accuracy": best["best_accuracy"], "best_epoch": best["best_epoch"]}
                  if best else {}))
    write_json(out_dir / "evaluation.json",
               {**details, "per_class_accuracy": evaluated["per_class_accuracy"],
                "top_confusions": evaluated["top_confusions"]})
    return evaluated


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
    ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))   # one epoch too
