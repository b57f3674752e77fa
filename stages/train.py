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
While it trains, the state after each epoch is kept outside the outputs
(checkpoints.checkpoint_path): a killed run goes on from there; it is removed once the stage ends.
"""
from dataclasses import asdict
from pathlib import Path

import torch

from stages.lib import evaluation, live, models, plots, png
from stages.lib.core import checkpoints, data, distributed, engine, inference, params, runtime
from stages.lib.core.common import StageError, run, seed_for, writes
from stages.lib.core.files import check_writable, save_torch, write_json


def main(argv):
    if len(argv) != 2:
        raise StageError("usage: python -m stages.train <model> <dataset> (dvc.yaml runs it for "
                         "each entry of params.yaml's `models`)")
    name, dataset = argv
    models.module(name)   # a model with no module: one line, before anything is read
    settings = params.load()
    shared, cfg = params.shared(settings), params.training(settings, name)
    out = Path("plots") / name
    if writes():
        check_writable("models", "metrics", out)
    dist_cfg = distributed.settings(settings)
    ctx = distributed.start(dist_cfg, shared.device, cfg.batch_size,
                            f"{name}.batch_size", "stages.train", argv)
    if ctx is None:
        return   # this process launched the workers, and they are done
    device, amp_dtype = runtime.setup(shared)
    device = distributed.device_of(ctx, device)

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
    env = runtime.run_info(device, amp_dtype,
                           runtime.precision_choice(device, shared.precision)[1]) \
        | ctx.describe(device) \
        | {"distributed": asdict(dist_cfg)}
    if ctx.main:
        print(f"{name}: {n_params:,} parameters ({n_weights:,} without biases) on {dataset} "
              f"({len(y_train)} train / {len(y_val)} val), {env['device']}, "
              f"{env['precision']}" + (f", {ctx.world} processes ({ctx.backend})"
                                       if ctx.world > 1 else ""), flush=True)

    record = params.record(shared, cfg)
    fingerprint = checkpoints.fingerprint_of(name, record, str(device), str(amp_dtype),
                                             torch.__version__, ctx.world, asdict(dist_cfg),
                                             folder / "train.pt", folder / "val.pt",
                                             *checkpoints.code_files())
    checkpoint = checkpoints.checkpoint_path(name, fingerprint)
    history, state, seconds = live.fit(
        out / "live", ctx=ctx, model=model, train_batches=train_batches,
        val_batches=val_batches, epochs=cfg.epochs, optimizer=optimizer, device=device,
        amp_dtype=amp_dtype, lr_key=f"{name}.lr", checkpoint=checkpoint,
        fingerprint=fingerprint, generators=[generator] + [augmenter] * (ctx.world > 1))
    if not ctx.main:
        ctx.close()
        return   # rank 0 evaluates and writes

    summary = evaluation.summarize(history)
    preds, labels = inference.predict(model, val_batches(0, 1), device, amp_dtype)
    png.save(plots.curves_figure(history, name), out / "curves.png")

    about = {"arch": name, "classes": classes, "normalization": [list(mean), list(std)]}
    save_torch({**about, "epoch": cfg.epochs, "state_dict": inference.cpu_state(state)},
               f"models/{name}.pt")
    write_json(f"models/{name}.run.json",
               {**env, "params": record, "seconds": round(seconds, 1),
                "epoch_seconds": [round(r["seconds"], 1) for r in history]})
    plots.write_evaluation(out, f"metrics/{name}.json", labels.numpy(), preds.numpy(), classes,
                           f"{name}, epoch {cfg.epochs} (the last)",
                           best=summary,
                           details={key: value for key, value in summary.items()
                                    if key not in evaluation.HEADLINE}
                           | {"params": n_params, "params_no_bias": n_weights,
                              "largest_layer": largest, "largest_layer_params": largest_params,
                              "epochs": cfg.epochs, "train_samples": len(y_train),
                              "val_samples": len(y_val)})
    checkpoints.finish_checkpoint(checkpoint)
    ctx.close()
    print(f"{name}: val accuracy {history[-1]['val_accuracy']:.4f} (last epoch), best "
          f"{summary['best_accuracy']:.4f} at epoch {summary['best_epoch']}, {seconds:.0f} s",
          flush=True)


if __name__ == "__main__":
    run(main)
