"""Stage compare: the four transfer strategies side by side.

    python -m stages.compare

Reads params `seed`, `device`, `precision`, `strategies`, `tsne.{perplexity,pca_dims,
silhouette_points,probe_folds}`, `transfer.{dataset,image_size,eval_batch_size,val_samples}`,
the trained models (models/transfer/<strategy>.pt) and the frozen ImageNet features
(data/features/val.pt, the SVM's representation). Writes:
  plots/transfer/tsne.png         t-SNE grid of each strategy's 2048-d validation features
  plots/transfer/tsne.csv         the coordinates: strategy, index, x, y, label, class
  metrics/tsne/transfer/<strategy>.json  silhouette and probe = linear separability (cross-
                                  validated logistic-regression accuracy) of those features
  plots/transfer/tsne.json        per strategy: dimensions and points; the settings
The accuracy of the strategies is not read here: the report draws it, so that a change to
`transfer.svm.*` reruns `svm` and the report, not these inferences and t-SNEs.
"""
from pathlib import Path

from stages.lib import analysis, png, transfer
from stages.lib.analysis import fmt, judge
from stages.lib.core import data, inference, params, registry, runtime
from stages.lib.core.common import StageError, run
from stages.lib.core.files import write_csv

OUT = Path("plots/transfer")


def main(argv):
    if argv:
        raise StageError("usage: python -m stages.compare")
    settings = params.load()
    shared = params.shared(settings)
    trained = registry.strategies(settings)
    order = registry.report_order(trained)
    data_cfg = params.transfer_data(settings, training=False, splits=("val",))
    cfg = params.tsne(settings)
    device, amp_dtype = runtime.setup(shared)
    root = transfer.dataset_root(data_cfg)

    frozen = data.load_features("val")
    classes = frozen["classes"]
    features = {"svm": frozen["features"].numpy()}
    labels = frozen["labels"].numpy()
    images = transfer.image_set(root, "val", data_cfg, shared.seed, device)
    for strategy in trained:
        model, _ = inference.load_checkpoint(f"models/transfer/{strategy}.pt", device)
        _, y, h, _ = inference.predict(model, images.batches(data_cfg.eval_batch_size), device,
                                    amp_dtype, embed=True)
        check_same_images(y, labels, root)
        features[strategy] = h.numpy()

    metrics, panels, rows = {}, [], []
    for strategy in order:
        m = metrics[strategy] = judge(features[strategy], labels, cfg, shared.seed)
        coords = analysis.tsne_2d(features[strategy], perplexity=cfg.perplexity,
                                  pca_dims=cfg.pca_dims, seed=shared.seed)
        panels.append((coords, labels, f"{strategy}\nsilhouette {fmt(m['silhouette'])}, "
                                       f"linear {fmt(m['probe'])}"))
        rows += [(strategy, i, f"{x:.4f}", f"{y:.4f}", int(c), classes[c])
                 for i, ((x, y), c) in enumerate(zip(coords, labels))]
        print(f"{strategy}: silhouette {fmt(m['silhouette'])}, linear separability "
              f"{fmt(m['probe'])}", flush=True)

    OUT.mkdir(parents=True, exist_ok=True)
    png.save(analysis.tsne_grid(panels, classes, f"t-SNE of the 2048-d validation features "
                                                f"({len(labels)} images)"), OUT / "tsne.png")
    write_csv(OUT / "tsne.csv", ["strategy", "index", "x", "y", "label", "class"], rows)
    analysis.write_scores("metrics/tsne/transfer", OUT / "tsne.json", metrics,
                       params.record(cfg))


def check_same_images(y, labels, root):
    """The validation labels a model was run on are those of the frozen features, in order
    (lengths first: comparing arrays of other lengths would broadcast or fail)."""
    if len(y) != len(labels) or not (y.numpy() == labels).all():
        raise StageError(f"data/features/val.pt does not match the validation set of {root}: "
                         "run `dvc repro features`")


if __name__ == "__main__":
    run(main)
