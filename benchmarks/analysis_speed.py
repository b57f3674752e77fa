"""The analysis of a representation (what tsne@<model> and compare compute) by the ways it could
be done, on the same points: the linear probe (cross-validated logistic regression) and the 2-D
t-SNE. Prints time and quality of each, and ratios against the first (the reference).

The points are the validation features of a trained model, as tsne@<model> takes them (its
params: `tsne.points`, `seed`): by default AlexNet's 2048-d intermediate layer, the slowest
case. Needs models/<model>.pt and data/raw/<dataset>/ (dvc repro train@<model>).

Probe: the quality is the cross-validated accuracy (the same folds for every variant), with
the solver's iterations. t-SNE: trustworthiness (sklearn.manifold.trustworthiness, 10
neighbours: how far the 2-D neighbourhoods are the high-dimensional ones; on a subsample, as
it needs all pairwise distances) and the silhouette of the classes in 2-D.

    python -m benchmarks.analysis_speed
    python -m benchmarks.analysis_speed --model simple_cnn --points 2000
"""
import argparse
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch
import yaml

from stages.lib import analysis
from stages.lib.core import data, inference, params, registry
from stages.lib.core.common import StageError
from stages.lib.core.runtime import keep_freed_memory

ROOT = Path(__file__).resolve().parents[1]
DATASETS = registry.models(params.load(ROOT / "params.yaml"))   # {model: dataset}


def features(name, points, seed):
    """(intermediate features, labels) of `points` validation images, as tsne@<name> takes
    them."""
    model, checkpoint = inference.load_checkpoint(ROOT / "models" / f"{name}.pt",
                                               torch.device("cpu"))
    val = data.load_tensors(ROOT / "data" / "raw" / DATASETS[name], "val")
    keep = torch.from_numpy(data.subsample(len(val["labels"]), points, seed))
    mean, std = checkpoint["normalization"]
    _, labels, h, _ = inference.predict(
        model, data.batches(val["images"][keep], val["labels"][keep], 1000, mean=mean, std=std),
        torch.device("cpu"), torch.bfloat16, embed=True, progress=None)
    return h.numpy(), labels.numpy()


def probe_variants(folds, seed):
    """{name: function(x, y) -> (accuracy, iterations)}: the reference first."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_validate
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)

    def variant(jobs, **options):
        def probe(x, y):
            result = cross_validate(make_pipeline(StandardScaler(), LogisticRegression(
                **options)), x, y, cv=cv, n_jobs=jobs, return_estimator=True)
            iterations = max(int(e[-1].n_iter_.max()) for e in result["estimator"])
            return float(result["test_score"].mean()), iterations
        return probe

    jobs = min(folds, os.cpu_count() or 1)
    return {
        "lbfgs, tol 1e-4, folds one by one (reference)": variant(None, max_iter=1000),
        f"lbfgs, tol 1e-4, folds on {jobs} processes": variant(jobs, max_iter=1000),
        f"lbfgs, tol {analysis.PROBE_TOL:g}, folds on {jobs} processes (the stage's)":
            variant(jobs, max_iter=1000, tol=analysis.PROBE_TOL),
        f"lbfgs stopped at 100 iterations, folds on {jobs} processes":
            variant(jobs, max_iter=100),
    }


def tsne_variants(cfg, seed):
    """{name: function(x) -> 2-D coordinates}: the stage's own (analysis.tsne_2d) first."""
    found = {"scikit-learn (analysis.tsne_2d, the stage's)": lambda x: analysis.tsne_2d(
        x, perplexity=cfg["perplexity"], pca_dims=cfg["pca_dims"], seed=seed)}
    try:
        import openTSNE
        from sklearn.decomposition import PCA
    except ImportError:
        print("  (openTSNE not installed: pip install openTSNE to compare it)")
        return found

    def open_tsne(x):
        x = PCA(n_components=cfg["pca_dims"], random_state=seed).fit_transform(x)
        return np.asarray(openTSNE.TSNE(perplexity=cfg["perplexity"], n_jobs=os.cpu_count(),
                                        random_state=seed).fit(x))
    found["openTSNE (FFT, every core)"] = open_tsne
    return found


def timed(function, *args):
    start = time.perf_counter()
    result = function(*args)
    return time.perf_counter() - start, result


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="alexnet", choices=list(DATASETS))
    parser.add_argument("--points", type=int, default=0,
                        help="validation images (0: params.yaml's tsne.points)")
    parser.add_argument("--trust-points", type=int, default=2000,
                        help="points trustworthiness is computed on")
    parser.add_argument("--skip", choices=["probe", "tsne"], default=None)
    args = parser.parse_args()
    keep_freed_memory()
    warnings.filterwarnings("ignore", message="lbfgs failed to converge")   # the 100 row's
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    cfg, seed = params["tsne"], params["seed"]
    points = args.points or cfg["points"]
    x, y = features(args.model, points, seed)
    print(f"{args.model}: {len(y)} validation images, {x.shape[1]}-d intermediate features, "
          f"{os.cpu_count()} cores", flush=True)
    if args.skip != "probe":
        print(f"\nlinear probe ({cfg['probe_folds']} folds):", flush=True)
        reference = None
        for name, probe in probe_variants(cfg["probe_folds"], seed).items():
            seconds, (accuracy, iterations) = timed(probe, x, y)
            reference = reference or (seconds, accuracy)
            print(f"  {name:52s} {seconds:7.1f} s  ratio {seconds / reference[0]:.2f}x  "
                  f"accuracy {100 * accuracy:.2f} % ({100 * (accuracy - reference[1]):+.2f} "
                  f"points), {iterations} iterations", flush=True)
    if args.skip != "tsne":
        from sklearn.manifold import trustworthiness
        from sklearn.metrics import silhouette_score

        print(f"\nt-SNE (perplexity {cfg['perplexity']}, PCA to {cfg['pca_dims']} first):",
              flush=True)
        sample = data.subsample(len(y), args.trust_points, seed)
        reference = None
        for name, embed in tsne_variants(cfg, seed).items():
            seconds, coords = timed(embed, x)
            reference = reference or seconds
            trust = trustworthiness(x[sample], coords[sample], n_neighbors=10)
            print(f"  {name:52s} {seconds:7.1f} s  ratio {seconds / reference:.2f}x  "
                  f"trustworthiness {trust:.4f}, 2-D silhouette "
                  f"{silhouette_score(coords, y):.3f}", flush=True)


if __name__ == "__main__":
    try:
        main()
    except StageError as error:
        sys.exit(f"error: {error}")
