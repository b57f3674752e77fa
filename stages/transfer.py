"""Stage transfer@<strategy>: ResNet-50 trained on the transfer set one of three ways.

    python -m stages.transfer <strategy>

A strategy is an entry of params.yaml's `strategies`: its value is the file its ResNet-50
starts from, stages/lib/models/resnet50.py (random weights) or data/weights/resnet50.pth
(ImageNet's, with a new head), and its section transfer.<strategy> says how it trains:
`train` all layers (the backbone at `backbone_lr` when it starts from ImageNet) or the head
only, with its optimizer, schedule and augmentation. The practical's three:
  scratch       random initialisation, every layer trained
  finetune      ImageNet weights, new head, every layer trained, the backbone slower
  finetune_aug  as finetune, with data augmentation

Reads params `seed`, `device`, `precision`, `transfer.{dataset,image_size,batch_size,
eval_batch_size,num_workers,resident_mb,train_samples,val_samples}`,
`transfer.<strategy>.*`, `distributed.*` and data/raw/<transfer.dataset>/ (decoded once and
kept on the device within `transfer.resident_mb`: stages/lib/images.py). With
`distributed.nproc_per_node` > 1 it trains on that many processes (torchrun, DDP;
stages/lib/core/distributed.py); rank 0 writes.
Writes models/transfer/<strategy>.pt (the last epoch's weights: the model every number and
figure of the stage describes), .run.json, metrics/transfer/<strategy>.json (evaluation.HEADLINE:
accuracy of that model, best_accuracy and best_epoch named beside it),
plots/transfer/<strategy>/evaluation.json (per-class accuracy, top confusions, losses, the
sample counts used),
plots/transfer/<strategy>/live/ (dvclive curves), curves.png, confusion.{csv,png}. The
training state after each epoch is kept outside the outputs (checkpoints.checkpoint_path), to resume
a killed run, and removed once the stage ends.
"""
from dataclasses import asdict
from pathlib import Path

import torch

from stages.lib import evaluation, live, models, plots, png, transfer
from stages.lib.core import checkpoints, data, distributed, engine, inference, params, runtime
from stages.lib.core.common import StageError, run, writes
from stages.lib.core.files import check_writable, save_torch, write_json


def main(argv):
    if len(argv) != 1:
        raise StageError("usage: python -m stages.transfer <strategy> (dvc.yaml runs it for "
                         "each entry of params.yaml's `strategies`)")
    strategy = argv[0]
    settings = params.load()
    start = params.start(settings, strategy)
    shared, data_cfg = params.shared(settings), params.transfer_data(settings)
    cfg = params.strategy(settings, strategy)
    out = Path("plots/transfer") / strategy
    if writes():
        check_writable("models/transfer", "metrics/transfer", out)
    dist_cfg = distributed.settings(settings)
    ctx = distributed.start(dist_cfg, shared.device, data_cfg.batch_size,
                            "transfer.batch_size", "stages.transfer", argv)
    if ctx is None:
        return   # this process launched the workers, and they are done
    device, amp_dtype = runtime.setup(shared)
    device = distributed.device_of(ctx, device)
    root = transfer.dataset_root(data_cfg)
    classes = transfer.classes_of(root)

    model, groups = transfer.start_model(start, cfg, len(classes))
    model = inference.prepare(model, device)
    distributed.reseed(ctx, shared.seed)
    optimizer = engine.make_optimizer(cfg.optimizer, groups, cfg.lr, cfg.momentum,
                                      cfg.weight_decay)
    scheduler = engine.make_scheduler(cfg.scheduler, optimizer, cfg.epochs, cfg.step_size,
                                      cfg.gamma)
    shard = (ctx.rank, ctx.world)
    train_set = transfer.image_set(root, "train", data_cfg, shared.seed, device, cfg.augment,
                                   rank=ctx.rank)
    val_set = transfer.image_set(root, "val", data_cfg, shared.seed, device)

    def train_batches(epoch):
        return train_set.batches(data_cfg.batch_size, epoch, shard)   # the epoch's seeded order

    def val_batches(share=shard):
        return val_set.batches(data_cfg.eval_batch_size, shard=share)

    n_params, _ = models.count_parameters(model)
    env = runtime.run_info(device, amp_dtype,
                           runtime.precision_choice(device, shared.precision)[1]) \
        | ctx.describe(device) \
        | {"distributed": asdict(dist_cfg)}
    if ctx.main:
        print(f"transfer@{strategy}: ResNet-50 ({n_params:,} parameters), {data_cfg.dataset} "
              f"{len(train_set)} train / {len(val_set)} val images "
              f"({train_set.describe()}), classes {', '.join(classes)}, "
              f"{data_cfg.image_size} px, {env['device']}, "
              f"{env['precision']}" + (f", {ctx.world} processes ({ctx.backend})"
                                       if ctx.world > 1 else ""), flush=True)

    record = params.record(shared, data_cfg, cfg)
    weights = [transfer.WEIGHTS] if start == "imagenet" else []
    fingerprint = checkpoints.fingerprint_of(strategy, record, str(device), str(amp_dtype),
                                             torch.__version__, ctx.world, asdict(dist_cfg),
                                             root, *weights, *checkpoints.code_files())
    checkpoint = checkpoints.checkpoint_path(f"transfer-{strategy}", fingerprint)
    history, state, seconds = live.fit(
        out / "live", ctx=ctx, model=model, train_batches=train_batches,
        val_batches=val_batches, epochs=cfg.epochs, optimizer=optimizer,
        scheduler=scheduler, device=device, amp_dtype=amp_dtype,
        lr_key=f"transfer.{strategy}.lr", checkpoint=checkpoint, fingerprint=fingerprint,
        generators=[train_set.generator])
    if not ctx.main:
        ctx.close()
        return   # rank 0 evaluates and writes

    summary = evaluation.summarize(history)
    preds, labels = inference.predict(model, val_batches((0, 1)), device, amp_dtype)
    png.save(plots.curves_figure(history, f"ResNet-50 {strategy}"), out / "curves.png")

    mean, std = data.NORMALIZATION["imagenet"]
    save_torch({"arch": "resnet50", "classes": classes, "normalization": [list(mean), list(std)],
                "image_size": data_cfg.image_size, "epoch": cfg.epochs,
                "state_dict": inference.cpu_state(state)}, f"models/transfer/{strategy}.pt")
    write_json(f"models/transfer/{strategy}.run.json",
               {**env, "params": record, "seconds": round(seconds, 1),
                "epoch_seconds": [round(r["seconds"], 1) for r in history]})
    plots.write_evaluation(
        out, f"metrics/transfer/{strategy}.json", labels.numpy(), preds.numpy(), classes,
        f"ResNet-50 {strategy}, epoch {cfg.epochs} (the last)", best=summary,
        details={"epochs": cfg.epochs, "final_val_loss": summary["final_val_loss"],
                 "final_train_accuracy": summary["final_train_accuracy"],
                 "image_size": data_cfg.image_size, "train_samples": len(train_set),
                 "val_samples": len(val_set)})
    checkpoints.finish_checkpoint(checkpoint)
    ctx.close()
    print(f"transfer@{strategy}: val accuracy {history[-1]['val_accuracy']:.4f} (last epoch), best "
          f"{summary['best_accuracy']:.4f} at epoch {summary['best_epoch']}, {seconds:.0f} s",
          flush=True)


if __name__ == "__main__":
    run(main)
