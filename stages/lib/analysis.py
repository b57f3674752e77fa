"""Judging representations: t-SNE pictures, silhouette scores and linear-probe accuracy
(scikit-learn does the work), and the files that keep them (stages tsne@<model> and
compare; the report reads them). Nothing that trains imports this module."""
import os
import time
from pathlib import Path

import numpy as np
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression
from sklearn.manifold import TSNE
from sklearn.metrics import silhouette_score
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from . import png
from .core.files import read_json, write_json
from .png import plt


def tsne_2d(features, *, perplexity, pca_dims, seed):
    """2-D t-SNE of `features` (n, d), after PCA to `pca_dims` when d is larger. Perplexity is
    capped below n/3 so that tiny sets still work."""
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


SCORES = ("silhouette", "probe")   # the keys of every metrics/tsne/**.json


def write_scores(metrics_dir, details_path, judged, settings):
    """The separability of representations (`judged`: {name: judge(...) + extras}):
    one file per representation, metrics_dir/<name>.json, with its silhouette and linear-probe
    accuracy (SCORES: the same two columns for every representation in `dvc metrics show`),
    and `details_path` with everything else of each and the `settings`."""
    for name, v in judged.items():
        write_json(Path(metrics_dir) / f"{name}.json", {k: v[k] for k in SCORES})
    write_json(details_path, {**{name: {k: x for k, x in v.items() if k not in SCORES}
                                 for name, v in judged.items()}, "settings": settings})


def read_scores(metrics_dir, details_path, names):
    """What write_scores wrote, as one record: {name: scores and details, "settings": ...}."""
    details = read_json(details_path)
    return {**{name: {**read_json(Path(metrics_dir) / f"{name}.json"), **details[name]}
               for name in names}, "settings": details["settings"]}


def tsne_axes(ax, coords, labels, classes, title):
    cmap = plt.get_cmap("tab10" if len(classes) <= 10 else "tab20")
    for i, name in enumerate(png.names(classes)):
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
