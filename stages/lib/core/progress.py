"""What a training or inference pass shows while it runs: a tqdm bar on a terminal, a line
every PROGRESS_INTERVAL seconds in logs (dvc repro, CI, a queue worker's log)."""
import math
import os
import time

from tqdm import tqdm

from .common import StageError

PROGRESS_ENV = "PROGRESS_INTERVAL"
# Seconds between progress lines when the output is a log, not a terminal (default 30; 0:
# after every batch; "off": no progress at all, bar included). An environment variable, not a
# params.yaml key: it changes no result, and DVC reruns a stage when one of its params changes.
DEFAULT_PROGRESS_INTERVAL = 30.0
# Seconds between reads of the running loss shown in a terminal's bar (each read waits for
# the device on CUDA; the bar itself reads nothing from the device).
BAR_LOSS_INTERVAL = 2.0


def progress_interval():
    """PROGRESS_ENV's seconds between progress lines in a log; None when it says "off"."""
    value = os.environ.get(PROGRESS_ENV, "").strip()
    if not value:
        return DEFAULT_PROGRESS_INTERVAL
    if value.lower() == "off":
        return None
    try:
        seconds = float(value)
    except ValueError:
        seconds = math.nan
    if not (0 <= seconds < math.inf):
        raise StageError(f"{PROGRESS_ENV}={value}: expected the seconds between progress lines "
                         "(0: every batch) or 'off'")
    return seconds


class Progress:
    """Progress through one pass over batches, shown while it runs: a tqdm bar (batches, rate,
    ETA, running loss) when the output is a terminal, else (a log: `dvc exp run --queue`, a
    pipe) a flushed line at most every `interval` seconds. It never changes what the pass
    computes, and reads nothing from the device but the running loss, every so often.

    desc: what the pass is ("epoch 3/15 train"); total: its number of batches, when known
    (run_epoch and predict take len(batches) where there is one). interval: seconds between
    lines in a log, by default from PROGRESS_ENV. file: the stream of the bar and the lines
    (default: the bar on stderr, as tqdm, the lines on stdout). disable: True shows nothing;
    None (tqdm's meaning) a bar only when `file` is a terminal, else lines; False a bar always.
    `n` is the number of batches done."""

    def __init__(self, desc, total=None, *, interval=None, file=None, disable=None):
        self.desc, self.total, self.file, self.disable, self.n = desc, total, file, disable, 0
        self.interval, self.bar = interval, None
        if disable is not True and interval is None:
            self.interval = progress_interval()
            if self.interval is None:   # PROGRESS_ENV=off
                self.disable = True

    @classmethod
    def of(cls, progress, batches):
        """`progress` (None: nothing shown, a string: its description, or a Progress) as a
        Progress, its total taken from len(batches) when it has none."""
        if not isinstance(progress, Progress):
            progress = cls("", disable=True) if progress is None else cls(progress)
        if progress.total is None and progress.disable is not True:
            try:
                progress.total = len(batches)
            except TypeError:   # a generator: the number of batches is not known
                pass
        return progress

    def __enter__(self):
        self.start = self.shown = time.monotonic()
        if self.disable is not True:
            bar = tqdm(total=self.total, desc=self.desc, unit="batch", leave=False,
                       file=self.file, disable=self.disable, dynamic_ncols=True)
            self.bar = None if bar.disable else bar
        return self

    def step(self, loss_sum=None, count=0):
        """One batch done; `loss_sum` (a tensor) over `count` samples is the running loss."""
        self.n += 1
        if self.disable is True:
            return
        now = time.monotonic()
        if self.bar is not None:
            if loss_sum is not None and now - self.shown >= BAR_LOSS_INTERVAL:
                self.shown = now
                self.bar.set_postfix_str(f"loss {loss_sum.item() / count:.4f}")  # redraws now
            self.bar.update()
        elif self.interval is not None and now - self.shown >= self.interval:
            self.shown = now
            print(self.line(now, loss_sum, count), file=self.file, flush=True)

    def line(self, now, loss_sum=None, count=0):
        """"  epoch 3/15 train: batch 120/782, 4.10 batch/s, 2:41 left, loss 1.2345" (indented:
        the per-epoch summary lines stay the only ones that start with "epoch")."""
        elapsed = now - self.start
        rate = self.n / elapsed if elapsed > 0 else 0.0
        parts = [f"batch {self.n}" + (f"/{self.total}" if self.total else ""),
                 f"{rate:.2f} batch/s"]
        if self.total and rate > 0:
            parts.append(f"{tqdm.format_interval(max(self.total - self.n, 0) / rate)} left")
        else:
            parts.append(f"{tqdm.format_interval(elapsed)} elapsed")
        if loss_sum is not None and count:
            parts.append(f"loss {loss_sum.item() / count:.4f}")
        return f"  {self.desc}: {', '.join(parts)}"

    def __exit__(self, *exc):
        if self.bar is not None:
            self.bar.close()
        return False
