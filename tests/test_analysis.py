"""Confusions, per-class accuracy, t-SNE, silhouette and linear probe."""
import numpy as np
import pytest

from stages.lib import analysis, evaluation
from stages.lib.core import data

CLASSES = ["cat", "dog", "bird"]


def test_confusions_and_per_class_accuracy():
    labels = [0, 0, 0, 0, 1, 1, 1, 2, 2, 2]
    preds = [0, 1, 1, 2, 1, 0, 0, 2, 2, 1]
    matrix, m = evaluation.evaluation_metrics(np.array(labels), np.array(preds), CLASSES)
    assert matrix.tolist() == [[1, 2, 1], [2, 1, 0], [0, 1, 2]]
    assert m["accuracy"] == pytest.approx(0.4)
    assert m["per_class_accuracy"] == pytest.approx({"cat": 0.25, "dog": 1 / 3, "bird": 2 / 3})
    # most frequent first; ties in class order (cat->dog before dog->cat)
    assert list(m["top_confusions"].values()) == [
        {"true": "cat", "predicted": "dog", "count": 2},
        {"true": "dog", "predicted": "cat", "count": 2},
        {"true": "cat", "predicted": "bird", "count": 1},
        {"true": "bird", "predicted": "dog", "count": 1}]
    assert list(m["top_confusions"]) == ["1", "2", "3", "4"]


def test_top_confusions_limits_to_k_and_skips_empty():
    matrix = np.diag([5, 5, 5])
    assert evaluation.top_confusions(matrix, CLASSES) == []
    matrix = np.ones((4, 4), dtype=int)
    assert len(evaluation.top_confusions(matrix, list("abcd"), k=5)) == 5


def test_class_without_samples_has_no_accuracy():
    _, m = evaluation.evaluation_metrics(np.array([0, 0]), np.array([0, 1]), CLASSES)
    assert m["per_class_accuracy"]["bird"] is None


def clusters(n=60, d=20, spread=0.1, seed=0):
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 3
    centers = rng.normal(0, 5, (3, d))
    return centers[labels] + rng.normal(0, spread, (n, d)), labels


def test_separated_clusters_score_high_random_labels_low():
    x, y = clusters()
    assert analysis.silhouette(x, y, points=1000, seed=0) > 0.8
    assert analysis.linear_probe(x, y, folds=3, seed=0) == pytest.approx(1.0)
    shuffled = np.random.default_rng(1).permutation(y)
    assert analysis.silhouette(x, shuffled, points=1000, seed=0) < 0.1
    assert analysis.linear_probe(x, shuffled, folds=3, seed=0) < 0.7


def test_probe_and_silhouette_undefined_cases():
    x = np.random.default_rng(0).normal(size=(4, 3))
    assert analysis.silhouette(x, np.zeros(4, int), points=10, seed=0) is None
    assert analysis.linear_probe(x, np.array([0, 0, 0, 1]), folds=5, seed=0) is None


def test_tsne_shape_determinism_and_small_sets():
    x, _ = clusters(n=40, d=80)
    a = analysis.tsne_2d(x, perplexity=30, pca_dims=10, seed=0)
    b = analysis.tsne_2d(x, perplexity=30, pca_dims=10, seed=0)
    assert a.shape == (40, 2) and np.array_equal(a, b)
    assert analysis.tsne_2d(x[:6], perplexity=30, pca_dims=50, seed=0).shape == (6, 2)


def test_subsample():
    assert data.subsample(5, 10, 0).tolist() == [0, 1, 2, 3, 4]
    picked = data.subsample(100, 10, 0)
    assert len(set(picked.tolist())) == 10 and list(picked) == sorted(picked)
    assert data.subsample(100, 10, 0).tolist() == picked.tolist()


def test_curves_tick_whole_epochs_only():
    """A run of two epochs: the x axis says 1 and 2, never 1.25 or 1.5."""
    from stages.lib import plots

    history = [{"epoch": e, "train_loss": 1.0 / e, "val_loss": 1.2 / e, "train_accuracy": 0.5,
                "val_accuracy": 0.4} for e in (1, 2)]
    fig = plots.curves_figure(history, "two epochs")
    fig.canvas.draw()
    for ax in fig.axes:
        low, high = ax.get_xlim()
        shown = [t for t in ax.get_xticks() if low <= t <= high]
        assert shown and all(float(t).is_integer() for t in shown), shown
    plots.plt.close(fig)
