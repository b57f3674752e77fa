"""Judging a trained model's predictions and its training history: confusion matrices,
per-class accuracy, most frequent confusions, the numbers a history comes to (what the
training stages write; scikit-learn counts)."""
import numpy as np
from sklearn.metrics import confusion_matrix


def confusion(labels, preds, num_classes):
    return confusion_matrix(labels, preds, labels=list(range(num_classes)))


def per_class_accuracy(matrix, classes):
    totals = matrix.sum(axis=1)
    return {c: (float(matrix[i, i] / totals[i]) if totals[i] else None)
            for i, c in enumerate(classes)}


def top_confusions(matrix, classes, k=5):
    """The k most frequent (true -> predicted) mistakes, most frequent first (ties broken by
    class order), as [{"true", "predicted", "count"}]."""
    pairs = [(-int(matrix[t, p]), t, p) for t in range(len(classes)) for p in range(len(classes))
             if t != p and matrix[t, p] > 0]
    return [{"true": classes[t], "predicted": classes[p], "count": -n}
            for n, t, p in sorted(pairs)[:k]]


def evaluation_metrics(labels, preds, classes, k=5):
    """accuracy, per-class accuracy and the top-k confusions of a set of predictions."""
    matrix = confusion(labels, preds, len(classes))
    return matrix, {
        "accuracy": float(np.trace(matrix) / matrix.sum()),
        "per_class_accuracy": per_class_accuracy(matrix, classes),
        "top_confusions": {str(i + 1): c
                           for i, c in enumerate(top_confusions(matrix, classes, k))},
    }


def summarize(history):
    """The numbers a training history comes to. `accuracy` is the last epoch's validation
    accuracy (what the practical reports), `best_accuracy` and `best_epoch` the best epoch's
    (the earliest on ties): the keys of every trained model's metrics file."""
    best = max(history, key=lambda r: (r["val_accuracy"], -r["epoch"]))
    last = history[-1]
    min_val_loss = min(history, key=lambda r: (r["val_loss"], r["epoch"]))
    return {"accuracy": last["val_accuracy"], "best_accuracy": best["val_accuracy"],
            "best_epoch": best["epoch"], "final_val_loss": last["val_loss"],
            "final_train_accuracy": last["train_accuracy"], "final_train_loss": last["train_loss"],
            "min_val_loss": min_val_loss["val_loss"], "min_val_loss_epoch": min_val_loss["epoch"],
            "overfitting_from_epoch": overfitting_epoch(history)}


HEADLINE = ("accuracy", "best_accuracy", "best_epoch")   # metrics/**.json of a trained model


def overfitting_epoch(history):
    """The epoch after which validation loss stops improving while training loss keeps
    falling: the epoch of the minimum val loss, provided it is not the last epoch and the
    training loss at the end is below its value then; None otherwise (no sign of overfitting)."""
    best = min(range(len(history)), key=lambda i: (history[i]["val_loss"], i))
    if best == len(history) - 1:
        return None
    later = history[best + 1:]
    if later[-1]["train_loss"] < history[best]["train_loss"]:
        return history[best]["epoch"]
    return None
