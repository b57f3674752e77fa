"""engine.fit with its per-epoch curves logged through dvclive (and printed)."""
import time

from dvclive import Live

from .core import distributed, engine


def fit(live_dir, *, ctx=distributed.SINGLE, model, train_batches, val_batches, epochs,
        optimizer, device, amp_dtype, scheduler=None, lr_key="lr", checkpoint=None,
        fingerprint="", generators=()):
    """Run engine.fit (the arguments are its own), logging train/val loss and accuracy per
    epoch with dvclive in `live_dir` (its plots/metrics/{train,val}/{loss,accuracy}.tsv feed
    `dvc plots`). Returns (history, state, seconds): engine.fit's and the time it took.

    dvclive's step is the epoch number (1, 2, ...), so `dvc plots` and the metrics files name
    an epoch alike. The logs are written afresh each run (dvclive clears `live_dir`): a run
    resumed from a checkpoint replays the saved epochs into them first. That is dvclive's
    `resume=True` made exact: appending to the old logs would repeat a step when the kill fell
    between an epoch's log line and its checkpoint.

    On several processes (`ctx`) only rank 0 logs and prints (dvclive's advice for DDP)."""
    start = time.perf_counter()

    def train(on_epoch=None):
        return engine.fit(model, train_batches=train_batches, val_batches=val_batches,
                          epochs=epochs, optimizer=optimizer, device=device,
                          amp_dtype=amp_dtype, scheduler=scheduler, on_epoch=on_epoch,
                          lr_key=lr_key, checkpoint=checkpoint, fingerprint=fingerprint,
                          generators=generators, ctx=ctx)

    if not ctx.main:
        history, state = train()
        return history, state, time.perf_counter() - start
    # dvcyaml=False, save_dvc_exp=False: the stage's outputs are declared in dvc.yaml, and
    # experiments are DVC's business (`dvc exp run`), not dvclive's.
    with Live(dir=str(live_dir), dvcyaml=False, save_dvc_exp=False, report=None) as live:
        def on_epoch(r):
            live.step = r["epoch"]   # dvclive's step is the epoch, counted from 1 as everywhere
            for split in ("train", "val"):
                live.log_metric(f"{split}/loss", r[f"{split}_loss"])
                live.log_metric(f"{split}/accuracy", r[f"{split}_accuracy"])
            live.make_summary()
            print(f"epoch {r['epoch']:3d}/{epochs}  train loss {r['train_loss']:.4f} "
                  f"acc {r['train_accuracy']:.4f}  val loss {r['val_loss']:.4f} "
                  f"acc {r['val_accuracy']:.4f}  {r['seconds']:.1f} s", flush=True)

        history, state = train(on_epoch)
    return history, state, time.perf_counter() - start
