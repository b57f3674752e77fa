"""engine.fit with its per-epoch curves logged through dvclive (and printed)."""
import time

from .core import distributed, engine


def fit(live_dir, ctx=distributed.SINGLE, **fit_args):
    """Run engine.fit(**fit_args), logging train/val loss and accuracy per epoch with dvclive
    in `live_dir` (its plots/metrics/{train,val}/{loss,accuracy}.tsv feed `dvc plots`).
    Returns (history, state, seconds): engine.fit's and the time it took.

    dvclive's step is the epoch number (1, 2, ...), so `dvc plots` and the metrics files name
    an epoch alike. The logs are written afresh each run (dvclive clears `live_dir`): a run
    resumed from a checkpoint replays the saved epochs into them first. That is dvclive's
    `resume=True` made exact: appending to the old logs would repeat a step when the kill fell
    between an epoch's log line and its checkpoint.

    On several processes (`ctx`) only rank 0 logs and prints (dvclive's advice for DDP)."""
    from dvclive import Live

    start = time.perf_counter()
    if not ctx.main:
        history, state = engine.fit(ctx=ctx, **fit_args)
        return history, state, time.perf_counter() - start
    epochs = fit_args["epochs"]
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

        history, state = engine.fit(on_epoch=on_epoch, ctx=ctx, **fit_args)
    return history, state, time.perf_counter() - start
