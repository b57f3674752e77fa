"""What the report concludes from a run's numbers: pure functions of numbers and class names,
no files and no words, so that each rule is tested on scenarios of its own
(tests/test_judgements.py) apart from the rendering. The report lists these rules in its last
section, with the constants below.

- Two accuracies measured on n images differ only when the gap exceeds Z standard errors of
  the difference (binomial, about 95 %); a smaller gap is a tie, never a win.
- A K-class model is at chance level when its accuracy is not above 1/K by Z standard errors;
  its loss is a uniform guess's when within CHANCE_LOSS of ln K. A constant classifier
  predicts one class for every image. Either one has not learned: underfitting (high bias),
  whatever its curves look like, and it is not ranked with the models that learned.
- A trend needs two epochs at least. Overfitting: the validation loss ends more than
  LOSS_TOLERANCE above its minimum, reached before the last epoch, while the training loss
  kept falling (with the training loss rising too, the training diverged). Still improving:
  the validation loss fell by more than LOSS_TOLERANCE over the last epoch. Otherwise it has
  levelled off.
- High bias: training accuracy below HIGH_BIAS (the net does not fit even the images it learns
  from; dvclive's training accuracy is averaged over the epoch, with dropout on: a lower
  bound). Variance: training accuracy more than GAP above validation accuracy.
- Layers and representations: silhouettes differ beyond SILHOUETTE_TOLERANCE, linear-probe
  accuracies as accuracies do (above); one measure tied and the other won is a win.
"""
import math

import numpy as np

from . import evaluation

Z = 2.0                      # standard errors a difference of accuracies must exceed
CHANCE_LOSS = 0.05           # relative: a loss this close to ln K is a uniform guess's
LOSS_TOLERANCE = 0.03        # relative: validation-loss changes smaller than this are noise
HIGH_BIAS = 0.90             # training accuracy below this: high bias
GAP = 0.05                   # training accuracy this far above validation: variance
SMALL_GAP = 0.01             # a linear probe this close to the network: "shrink it"
SILHOUETTE_TOLERANCE = 0.02  # silhouettes closer than this are a tie
SEPARABLE = 0.98             # linear-probe accuracy from which classes are "nearly linearly
#                              separable"


def differ(a, b, n):
    """+1 when accuracy `a` is above `b` by more than Z standard errors of the difference, both
    measured on `n` images; -1 when below; 0 for a tie."""
    tolerance = Z * math.sqrt((a * (1 - a) + b * (1 - b)) / n) if n else math.inf
    return 0 if abs(a - b) <= tolerance else 1 if a > b else -1


def predictions(classes, matrix):
    """What a confusion matrix (rows: actual, columns: predicted) says of the classifier:
    classes it never predicts, the one class it always predicts (None unless constant) and
    that class's share of the images."""
    matrix = np.asarray(matrix)
    predicted = matrix.sum(axis=0)
    used = np.flatnonzero(predicted)
    constant = classes[used[0]] if len(used) == 1 else None
    return {"never_predicted": [c for c, n in zip(classes, predicted) if n == 0],
            "constant": constant,   # ... and the images that really are of that class:
            "constant_share": float(matrix[used[0]].sum() / matrix.sum()) if constant else None}


def learned(classes, matrix, val_loss=None):
    """Did the model learn? {"status": "constant" | "chance" | "learned", the numbers behind
    it: chance (1/K), chance_loss (ln K), loss_at_chance (None without a loss), and
    predictions()}."""
    matrix = np.asarray(matrix)
    k, n = len(classes), int(matrix.sum())
    accuracy = float(np.trace(matrix) / n)
    chance = 1 / k
    said = predictions(classes, matrix)
    at_chance = accuracy - chance <= Z * math.sqrt(chance * (1 - chance) / n)
    status = "constant" if said["constant"] else "chance" if at_chance else "learned"
    return {"status": status, "accuracy": accuracy, "chance": chance, "chance_loss": math.log(k),
            "loss_at_chance": None if val_loss is None
            else abs(val_loss - math.log(k)) <= CHANCE_LOSS * math.log(k),
            **said}


def fit(curves, best_epoch):
    """The shape of the training curves (rows: epoch, train_loss, train_accuracy, val_loss,
    val_accuracy): {"trend": "one_epoch" | "overfitting" | "diverging" | "improving" |
    "levelled", "bias": "high_bias" | "variance" | "good", and the epochs and values the
    sentences cite}. `best_epoch`: the epoch of the best validation accuracy."""
    last = curves[-1]
    at_min = min(curves, key=lambda r: (r["val_loss"], r["epoch"]))
    found = {"epochs": len(curves), "min_epoch": at_min["epoch"],
             "min_val_loss": at_min["val_loss"], "last": last, "at_min": at_min,
             "best_epoch": best_epoch,
             "best_is_last": best_epoch == last["epoch"],
             "gap": last["train_accuracy"] - last["val_accuracy"],
             "bias": "high_bias" if last["train_accuracy"] < HIGH_BIAS
             else "variance" if last["train_accuracy"] - last["val_accuracy"] > GAP else "good"}
    if len(curves) < 2:
        return {**found, "trend": "one_epoch"}
    rise = last["val_loss"] / at_min["val_loss"] - 1 if at_min["val_loss"] > 0 else 0.0
    if at_min is not last and rise > LOSS_TOLERANCE:
        trend = "overfitting" if last["train_loss"] < at_min["train_loss"] else "diverging"
        return {**found, "trend": trend, "rise": rise}
    before = curves[-2]
    improving = last["val_loss"] < before["val_loss"] * (1 - LOSS_TOLERANCE)
    return {**found, "trend": "improving" if improving else "levelled", "before": before}


def measures(a, b, n):
    """Each measure of two representations' scores ({silhouette, probe}) on n points: +1 where
    `a` is better, -1 where `b` is, 0 for a tie; None where a score is missing."""
    if None in (a["silhouette"], b["silhouette"], a["probe"], b["probe"]):
        return None
    gap = a["silhouette"] - b["silhouette"]
    return {"silhouette": 0 if abs(gap) <= SILHOUETTE_TOLERANCE else 1 if gap > 0 else -1,
            "probe": differ(a["probe"], b["probe"], n)}


def compare(a, b, n):
    """Two representations' scores ({silhouette, probe}) on n points: "a", "b", "tie" (both
    measures tied), "mixed" (each wins one), or None where a score is missing."""
    each = measures(a, b, n)
    if each is None:
        return None
    verdicts = set(each.values()) - {0}
    if not verdicts:
        return "tie"
    return "mixed" if len(verdicts) == 2 else "a" if verdicts == {1} else "b"


def better_layer(scores):
    """Which layer separates the classes better (t-SNE scores of a model: intermediate, final,
    each with silhouette, probe and points): "intermediate", "final", "tie", "mixed" or None."""
    inter, final = scores["intermediate"], scores["final"]
    verdict = compare(inter, final, inter["points"])
    return {"a": "intermediate", "b": "final"}.get(verdict, verdict)


def smaller(best_accuracy, probe, n):
    """How near a linear classifier on the intermediate features comes to the whole network,
    both on n images: "above" (no worse), "close" (a tie, or within SMALL_GAP), "below"; None
    if the probe was not measured."""
    if probe is None:
        return None
    if probe >= best_accuracy:
        return "above"
    close = differ(best_accuracy, probe, n) == 0 or best_accuracy - probe <= SMALL_GAP
    return "close" if close else "below"


def separable(probe):
    """True when a linear-probe accuracy says "nearly linearly separable"."""
    return probe is not None and probe >= SEPARABLE


def confused_pairs(classes, matrix, k=3):
    """(class, class, count) of the k most confused unordered pairs over the whole matrix, both
    directions summed, most first (ties in class order); pairs never confused are left out."""
    matrix = np.asarray(matrix)
    pairs = [(int(matrix[i, j] + matrix[j, i]), i, j)
             for i in range(len(classes)) for j in range(i + 1, len(classes))]
    return [(classes[i], classes[j], n) for n, i, j in sorted(pairs, key=lambda p: (-p[0], p[1:]))
            if n > 0][:k]


def top_confusions(classes, matrix, k=2):
    """The k most frequent one-way mistakes (true -> predicted), most first."""
    return evaluation.top_confusions(np.asarray(matrix), classes, k)


def per_class(classes, matrix):
    """[(class, accuracy, images, the class it is most often taken for or None)], worst
    accuracy first (ties in class order); a class with no image has accuracy None, last."""
    matrix = np.asarray(matrix)
    rows = []
    for i, name in enumerate(classes):
        wrong = matrix[i].copy()
        wrong[i] = 0
        total = int(matrix[i].sum())
        rows.append((name, float(matrix[i, i] / total) if total else None, total,
                     classes[int(wrong.argmax())] if wrong.any() else None))
    return sorted(rows, key=lambda r: (r[1] is None, r[1] or 0.0))


def ranking(results):
    """results: {name: {accuracy, images, status}} in the report's order. The ones that learned,
    best first, each with "tied" (no real difference from the one before); and those that did
    not learn, apart: (ranked [(name, accuracy, tied)], unlearned [name])."""
    learned_ = [s for s in results if results[s]["status"] == "learned"]
    order = sorted(learned_, key=lambda s: -results[s]["accuracy"])   # stable: ties keep order
    ranked = [(s, results[s]["accuracy"],
               i > 0 and differ(results[order[i - 1]]["accuracy"], results[s]["accuracy"],
                                results[s]["images"]) == 0)
              for i, s in enumerate(order)]
    return ranked, [s for s in results if s not in learned_]


def extremes(separability, n):
    """The representations that separate the classes best and worst: (best, worst), each a list
    of names tied with the extreme one (compare()), or None with fewer than two scored or all
    tied. `separability`: {name: {silhouette, probe}}; n: the points they were measured on."""
    scored = [s for s, v in separability.items()
              if v.get("silhouette") is not None and v.get("probe") is not None]
    if len(scored) < 2:
        return None
    order = sorted(scored, key=lambda s: (-separability[s]["probe"],
                                          -separability[s]["silhouette"]))
    best = [s for s in order if compare(separability[s], separability[order[0]], n) == "tie"]
    worst = [s for s in order if compare(separability[s], separability[order[-1]], n) == "tie"]
    return None if set(best) & set(worst) else (best, worst)


def versus(a, b, n_a, n_b):
    """Two models' final-layer scores compared (parts 1 and 2): "a", "b", "tie", "mixed" or None.
    Probe accuracies on different n: the smaller n sets the tolerance."""
    return compare(a, b, min(n_a, n_b))


def diagnosis(status, fitted):
    """The one-word answer to "high bias or overfitting?": "underfitting" (did not learn),
    "undetermined" (one epoch), "overfitting", "diverging", "still_learning",
    "underfitting_learning" (still improving, training accuracy still low), "high_bias",
    "variance" or "good" (levelled off)."""
    if status != "learned":
        return "underfitting"
    trend, bias = fitted["trend"], fitted["bias"]
    if trend == "one_epoch":
        return "undetermined"
    if trend in ("overfitting", "diverging"):
        return trend
    if trend == "improving":
        return "underfitting_learning" if bias == "high_bias" else "still_learning"
    return bias
