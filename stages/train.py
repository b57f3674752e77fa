"""Stage train@<model>: train a CNN from scratch on resident tensors, then evaluate it.

    python -m stages.train <model> <dataset>     (an entry of params.yaml's `models`)

Reads params `seed`, `device`, `precision`, `<model>.*`, `distributed.*` and
data/raw/<dataset>/{train,val}.pt. With `distributed.nproc_per_node` > 1 it trains on that many
processes (torchrun, DDP; stages/lib/core/distributed.py); rank 0 writes.
Writes:
  models/<model>.pt          the last epoch's weights (+ classes, normalization, epoch): the
                             model every number and figure below describes
  models/<model>.run.json    how it ran: device, precision, seconds per epoch, versions
  metrics/<model>.json       headline numbers (evaluation.HEADLINE): accuracy (of that model),
                             best_accuracy and best_epoch (the best epoch's, named only)
  plots/<model>/evaluation.json  the rest: losses, overfitting epoch, parameter counts, largest
                             layer, sample counts used, per-class accuracy, most frequent
                             confusions
  plots/<model>/live/        per-epoch curves (dvclive; step = epoch)
  plots/<model>/curves.png, confusion.csv (counted cells), confusion.png
(stages/lib/training.py, shared with transfer@<strategy>). While it trains, the state after
each epoch is kept outside the outputs (checkpoints.checkpoint_path): a killed run goes on
from there; it is removed once the stage ends.
"""
from pathlib import Path

import torch

from stages.lib import evaluation, models, training
from stages.lib.core import data, distributed, engine, inference, params
from stages.lib.core.common import StageError, run, seed_for


def main(argv):
    if len(argv) != 2:
        raise StageError("usage: python -m stages.train <model> <dataset> (dvc.yaml runs it for "
                         "each entry of params.yaml's `models`)")
    name, dataset = argv
    models.module(name)   # a model with no module: one line, before anything is read
    settings = params.load()
    shared, cfg = params.shared(settings), params.training(settings, name)
    out = Path("plots") / name
    go = training.start(settings, shared, label=name, checkpoint_name=name,
                        batch_size=cfg.batch_size, batch_key=f"{name}.batch_size",
                        module="stages.train", argv=argv, outputs=("models", "metrics", out))
    if go is None:
        return   # this process launched the workers, and they are done
    ctx, device = go.ctx, go.device

    folder = data.RAW / dataset
    train = data.take(data.load_tensors(folder, "train"), cfg.train_samples, shared.seed)
    val = data.take(data.load_tensors(folder, "val"), cfg.val_samples, shared.seed)
    classes = train["classes"]
    mean, std = data.NORMALIZATION[dataset]
    # Resident data: uint8 tensors on the device, batched by indexing.
    x_train, y_train = train["images"].to(device), train["labels"].to(device)
    x_val, y_val = val["images"].to(device), val["labels"].to(device)
    generator = torch.Generator().manual_seed(shared.seed)   # the order: the same on every rank
    # the augmentation: each rank its own stream (one process: the order's generator)
    augmenter = generator if ctx.world == 1 else \
        torch.Generator().manual_seed(seed_for(shared.seed, "augment", ctx.rank))

    def train_batches(epoch):
        return data.batches(x_train, y_train, cfg.batch_size, generator=generator,
                            mean=mean, std=std, augment=cfg.augment,
                            shard=(ctx.rank, ctx.world), augment_generator=augmenter)

    def val_batches(rank=ctx.rank, world=ctx.world):   # this rank's share: no image twice
        return data.batches(x_val[rank::world], y_val[rank::world], cfg.eval_batch_size,
                            mean=mean, std=std)

    model = inference.prepare(models.build(name, len(classes)), device)
    distributed.reseed(ctx, shared.seed)
    n_params, n_weights = models.count_parameters(model)
    largest, largest_params = models.largest_layer(model)
    optimizer = engine.make_optimizer(cfg.optimizer, model.parameters(), cfg.lr, cfg.momentum,
                                      cfg.weight_decay)
    training.announce(go, f"{n_params:,} parameters ({n_weights:,} without biases) on "
                          f"{dataset} ({len(y_train)} train / {len(y_val)} val)")

    record = params.record(shared, cfg)
    fitted = training.fit(go, model, optimizer, train_batches=train_batches,
                          val_batches=val_batches, epochs=cfg.epochs, lr_key=f"{name}.lr",
                          record=record, inputs=(folder / "train.pt", folder / "val.pt"),
                          generators=[generator] + [augmenter] * (ctx.world > 1),
                          live_dir=out / "live", model_path=f"models/{name}.pt")
    headline_left_out = {k: v for k, v in fitted.summary.items()
                         if k not in evaluation.HEADLINE}
    training.finish(go, fitted, model, val_batches(0, 1), title=name,
                    model_path=f"models/{name}.pt",
                    about={"arch": name, "classes": classes,
                           "normalization": [list(mean), list(std)]},
                    record=record, out=out, metrics_path=f"metrics/{name}.json",
                    classes=classes,
                    details=headline_left_out
                    | {"params": n_params, "params_no_bias": n_weights,
                       "largest_layer": largest, "largest_layer_params": largest_params,
                       "epochs": cfg.epochs, "train_samples": len(y_train),
                       "val_samples": len(y_val)})


if __name__ == "__main__":
    run(main)
