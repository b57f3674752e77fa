"""Stage tsne@<model>: t-SNE of the validation set at the intermediate and the final layer,
with the numbers that judge each representation.

    python -m stages.tsne <model> <dataset>      (an entry of params.yaml's `models`)

Reads params `seed`, `device`, `precision`, `tsne.*`, models/<model>.pt and
data/raw/<dataset>/val.pt. Writes:
  plots/<model>/tsne_intermediate.png, plots/<model>/tsne_final.png   coloured by class
  plots/<model>/tsne.csv          the 2-D coordinates: layer, index, x, y, label, class
  metrics/tsne/<model>/<layer>.json   intermediate.json, final.json: silhouette score of the
                                  classes in the layer's own feature space, probe = linear-probe
                                  accuracy (cross-validated logistic regression on those features)
  plots/<model>/tsne.json         per layer: its description, dimensions, points; the settings
"""
from pathlib import Path

import torch

from stages.lib import analysis, models, png
from stages.lib.analysis import fmt, judge
from stages.lib.core import data, inference, params, runtime
from stages.lib.core.common import StageError, run
from stages.lib.core.files import write_csv


def main(argv):
    if len(argv) != 2:
        raise StageError("usage: python -m stages.tsne <model> <dataset> (dvc.yaml runs it for "
                         "each entry of params.yaml's `models`)")
    name, dataset = argv
    embedding = models.module(name).EMBEDDING
    settings = params.load()
    shared, cfg = params.shared(settings), params.tsne(settings)
    device, amp_dtype = runtime.setup(shared)

    model, checkpoint = inference.load_checkpoint(f"models/{name}.pt", device)
    classes = checkpoint["classes"]
    val = data.load_tensors(data.RAW / dataset, "val")
    keep = torch.from_numpy(data.subsample(len(val["labels"]), cfg.points, shared.seed))
    mean, std = checkpoint["normalization"]
    _, labels, features, logits = inference.predict(
        model, data.batches(val["images"][keep], val["labels"][keep], 1000, mean=mean, std=std),
        device, amp_dtype, embed=True)
    labels = labels.numpy()

    out = Path("plots") / name
    out.mkdir(parents=True, exist_ok=True)
    metrics, rows = {}, []
    for layer, values, what in (("intermediate", features, embedding),
                                ("final", logits, f"{len(classes)}-d output layer, logits")):
        values = values.numpy()
        metrics[layer] = {"layer": what, **judge(values, labels, cfg, shared.seed)}
        coords = analysis.tsne_2d(values, perplexity=cfg.perplexity, pca_dims=cfg.pca_dims,
                                  seed=shared.seed)
        m = metrics[layer]
        title = (f"{name}: t-SNE of the {what}\n{len(labels)} validation images; silhouette "
                 f"{fmt(m['silhouette'])}, linear probe {fmt(m['probe'])}")
        png.save(analysis.tsne_figure(coords, labels, classes, title), out / f"tsne_{layer}.png")
        rows += [(layer, int(i), f"{x:.4f}", f"{y:.4f}", int(c), classes[c])
                 for i, (x, y), c in zip(keep.tolist(), coords, labels)]
        print(f"{name} {layer}: silhouette {fmt(m['silhouette'])}, linear probe "
              f"{fmt(m['probe'])}", flush=True)
    write_csv(out / "tsne.csv", ["layer", "index", "x", "y", "label", "class"], rows)
    analysis.write_scores(f"metrics/tsne/{name}", out / "tsne.json", metrics,
                       params.record(cfg))


if __name__ == "__main__":
    run(main)
