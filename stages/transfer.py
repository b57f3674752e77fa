"""Stage transfer@<strategy>: ResNet-50 trained on the transfer set, one strategy.

    python -m stages.transfer <strategy>

A strategy is an entry of params.yaml's `strategies`: its value is the file its ResNet-50
starts from, stages/lib/models/resnet50.py (random weights) or data/weights/resnet50.pth
(ImageNet's, with a new head), and its section transfer.<strategy> says how it trains:
`train` all layers (the backbone at `backbone_lr` when it starts from ImageNet) or the head
only, with its optimizer, schedule and augmentation. The practical's three:
  scratch       random initialisation, every layer trained
  finetune      ImageNet weights, new head, every layer trained, the backbone slower
  finetune_aug  as finetune, with data augmentation

Reads params `seed`, `device`, `precision`, `strategies.<strategy>`, `transfer.{dataset,
image_size,batch_size,eval_batch_size,train_samples,val_samples}`, `transfer.<strategy>.*`,
`distributed.*` and data/raw/<transfer.dataset>/ (decoded once and kept on the device within
`transfer.resident_mb`, by `transfer.num_workers` processes: the same bytes whatever they say,
so they are no params of the stage; stages/lib/images.py). With
`distributed.nproc_per_node` > 1 it trains on that many processes (torchrun, DDP;
stages/lib/core/distributed.py); rank 0 writes.
Writes models/transfer/<strategy>.pt (the last epoch's weights: the model every number and
figure of the stage describes), .run.json, metrics/transfer/<strategy>.json
(evaluation.HEADLINE: accuracy of that model, best_accuracy and best_epoch named beside it),
plots/transfer/<strategy>/evaluation.json (per-class accuracy, top confusions, losses, the
sample counts used), plots/transfer/<strategy>/live/ (dvclive curves), curves.png,
confusion.{csv,png}: stages/lib/training.py, shared with train@<model>. The training state
after each epoch is kept outside the outputs (checkpoints.checkpoint_path), to resume a killed
run, and removed once the stage ends.
"""
from pathlib import Path

from stages.lib import models, training, transfer
from stages.lib.core import distributed, engine, inference, params, registry
from stages.lib.core.common import StageError, run


def main(argv):
    if len(argv) != 1:
        raise StageError("usage: python -m stages.transfer <strategy> (dvc.yaml runs it for "
                         "each entry of params.yaml's `strategies`)")
    strategy = argv[0]
    settings = params.load()
    start = registry.start(settings, strategy)
    shared, data_cfg = params.shared(settings), params.transfer_data(settings)
    cfg = params.strategy(settings, strategy)
    out = Path("plots/transfer") / strategy
    go = training.start(settings, shared, label=f"transfer@{strategy}",
                        checkpoint_name=f"transfer-{strategy}",
                        batch_size=data_cfg.batch_size, batch_key="transfer.batch_size",
                        module="stages.transfer", argv=argv,
                        outputs=("models/transfer", "metrics/transfer", out))
    if go is None:
        return   # this process launched the workers, and they are done
    ctx, device = go.ctx, go.device
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
    training.announce(go, f"ResNet-50 ({n_params:,} trainable parameters), {data_cfg.dataset} "
                          f"{len(train_set)} train / {len(val_set)} val images "
                          f"({train_set.describe()}), classes {', '.join(classes)}, "
                          f"{data_cfg.image_size} px")

    record = params.record(shared, data_cfg, cfg)
    fitted = training.fit(go, model, optimizer, scheduler=scheduler,
                          train_batches=train_batches, val_batches=val_batches,
                          epochs=cfg.epochs, lr_key=f"transfer.{strategy}.lr", record=record,
                          inputs=[root] + ([transfer.WEIGHTS] if start == "imagenet" else []),
                          generators=[train_set.generator], live_dir=out / "live",
                          model_path=f"models/transfer/{strategy}.pt")
    mean, std = transfer.NORMALIZATION
    s = fitted.summary
    training.finish(go, fitted, model, val_batches((0, 1)), title=f"ResNet-50 {strategy}",
                    model_path=f"models/transfer/{strategy}.pt",
                    about={"arch": "resnet50", "classes": classes,
                           "normalization": [list(mean), list(std)],
                           "image_size": data_cfg.image_size},
                    record=record, out=out, metrics_path=f"metrics/transfer/{strategy}.json",
                    classes=classes,
                    details={"epochs": cfg.epochs, "final_val_loss": s["final_val_loss"],
                             "final_train_accuracy": s["final_train_accuracy"],
                             "image_size": data_cfg.image_size,
                             "train_samples": len(train_set), "val_samples": len(val_set)})


if __name__ == "__main__":
    run(main)
