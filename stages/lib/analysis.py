"""Judging predictions and representations: confusion matrices, most frequent confusions,
per-class accuracy, t-SNE, silhouette and linear-probe figures (scikit-learn does the work)."""
import numpy as np


def confusion(labels, preds, num_classes):
    from sklearn.metrics import confusion_matrix

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


def tsne_2d(features, *, perplexity, pca_dims, seed):
    """2-D t-SNE of `features` (n, d), after PCA to `pca_dims` when d is larger. Perplexity is
    capped below n/3 so that tiny sets still work."""
    import time

    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE

    x = np.asarray(features, dtype=np.float32)
    start = time.monotonic()
    pca = x.shape[1] > pca_dims and len(x) > pca_dims
    first = f" (PCA to {pca_dims} first)" if pca else ""
    print(f"t-SNE of {len(x)} points, {x.shape[1]}-d{first} ...", flush=True)
    if pca:
        x = PCA(n_components=pca_dims, random_state=seed).fit_transform(x)
    perplexity = min(perplexity, max(1.0, (len(x) - 1) / 3))
    coords = TSNE(n_components=2, perplexity=perplexity, init="pca", learning_rate="auto",
                  random_state=seed).fit_transform(x)
    print(f"t-SNE of {len(x)} points done in {time.monotonic() - start:.1f} s", flush=True)
    return coords


def silhouette(features, labels, *, points, seed):
    """Silhouette score of the classes in the feature space (Euclidean), on at most `points`
    samples; None when it is undefined (fewer than 2 classes present)."""
    from sklearn.metrics import silhouette_score

    labels = np.asarray(labels)
    if len(np.unique(labels)) < 2 or len(labels) < 3:
        return None
    sample = min(points, len(labels))
    return float(silhouette_score(np.asarray(features, dtype=np.float32), labels,
                                  sample_size=sample if sample < len(labels) else None,
                                  random_state=seed))


PROBE_TOL = 1e-3   # lbfgs's stopping tolerance (benchmarks/analysis_speed.py: same accuracy)


def linear_probe(features, labels, *, folds, seed):
    """Cross-validated accuracy of a logistic-regression classifier on standardized features:
    how linearly separable the classes are in this representation. None when a class has fewer
    members than 2 (no stratified split is possible).

    The folds run side by side on up to one process per core, and lbfgs stops at a tolerance
    of PROBE_TOL instead of 1e-4: benchmarks/analysis_speed.py measures both against the plain
    way (folds one by one, the default tolerance) on the same features; each fold's result
    does not depend on where it runs."""
    import os
    import time

    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    labels = np.asarray(labels)
    smallest = np.bincount(labels).astype(float)
    smallest = smallest[smallest > 0].min()
    folds = int(min(folds, smallest))
    if folds < 2 or len(np.unique(labels)) < 2:
        return None
    x = np.asarray(features, dtype=np.float32)
    jobs = max(1, min(folds, os.cpu_count() or 1))
    start = time.monotonic()
    print(f"linear probe: {folds} folds of {len(x)} points, {x.shape[1]}-d, on {jobs} "
          f"process{'es' if jobs > 1 else ''} ...", flush=True)
    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000, tol=PROBE_TOL))
    cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    accuracy = float(cross_val_score(probe, x, labels, cv=cv, n_jobs=jobs).mean())
    print(f"linear probe done in {time.monotonic() - start:.1f} s", flush=True)
    return accuracy


def judge(features, labels, cfg, seed):
    """Silhouette and linear-probe accuracy of one representation (cfg: a params.Tsne)."""
    return {"dimensions": int(features.shape[1]), "points": int(len(labels)),
            "silhouette": silhouette(features, labels, points=cfg.silhouette_points, seed=seed),
            "probe": linear_probe(features, labels, folds=cfg.probe_folds,
                                                  seed=seed)}


def fmt(value):
    return "n/a" if value is None else f"{value:.3f}"


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
