"""One epoch (training pass + validation pass) of the engine against a reference loop in the
style of the practical's notebooks, in one process, one run; prints times and ratios.

Reference: the notebooks' per-sample PIL image -> ToTensor -> Normalize (what torchvision's
           MNIST / CIFAR10 classes do per sample), a DataLoader (default settings), the same
           model (stages.lib.models), batch size and optimizer (torch.optim.Adam with its
           default implementation), fp32, on the CPU.
Engine:    the pipeline's code: uint8 tensors resident on the device, batched by indexing and
           normalized per batch (stages.lib.core.data.batches), Adam from engine.make_optimizer
           (torch's fused kernel), stages.lib.core.engine.run_epoch with channels_last, once in fp32
           and once in the precision `auto` picks.
Both run under the same process-wide settings (threads, the malloc tuning every stage applies).
The three training passes run interleaved, 20 batches each in turn (--chunk), so that the slow
spells of a shared machine fall on all of them alike; each time is the sum of its own chunks.

    python -m benchmarks.epoch_speed
    python -m benchmarks.epoch_speed --models simple_cnn --max-batches 200   # quicker
    python -m benchmarks.epoch_speed --repeat 3      # median ratio of three rounds
    python -m benchmarks.epoch_speed --chunk 0       # whole epochs, one after the other

Needs data/raw/{mnist,cifar10} (dvc repro download@mnist download@cifar10); both sides read
them (the reference through PIL images, as torchvision's dataset classes do).
"""
import argparse
import itertools
import math
import statistics
import sys
import time
from pathlib import Path

import torch
import yaml

from stages.lib import models
from stages.lib.core import data, engine, inference, params, registry
from stages.lib.core.common import StageError
from stages.lib.core.runtime import autocast_dtype, keep_freed_memory, precision_name

ROOT = Path(__file__).resolve().parents[1]

DATASETS = registry.models(params.load(ROOT / "params.yaml"))   # {model: dataset}


class ReferenceDataset(torch.utils.data.Dataset):
    """What torchvision's MNIST / CIFAR10 classes do per sample (uint8 array -> PIL image ->
    transform), over the pipeline's prepared tensors (data/raw/<dataset>/<split>.pt, loaded
    with weights_only=True). torchvision's CIFAR10 would unpickle the upstream batches with
    plain pickle, which runs whatever code a crafted file holds."""

    def __init__(self, record, transform):
        self.images, self.labels, self.transform = record["images"], record["labels"], transform

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, index):
        from PIL import Image

        image = self.images[index]
        image = Image.fromarray(image[0].numpy(), mode="L") if image.shape[0] == 1 \
            else Image.fromarray(image.permute(1, 2, 0).numpy())
        return self.transform(image), int(self.labels[index])


def reference_datasets(name, train_data, val_data):
    """(train, val) datasets of `name`'s data with the notebooks' per-sample
    ToTensor + Normalize."""
    from torchvision import transforms

    mean, std = data.NORMALIZATION[DATASETS[name]]
    transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize(mean, std)])
    return ReferenceDataset(train_data, transform), ReferenceDataset(val_data, transform)


def reference_run(name, cfg, train_set, val_set):
    """The notebook way: per-sample PIL -> ToTensor -> Normalize through a DataLoader, fp32, on
    the datasets of reference_datasets. Returns (train(k): k more training steps,
    validate(max_batches): the validation pass)."""
    torch.manual_seed(0)
    model = models.build(name, 10)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg["lr"])
    train_batches = iter(torch.utils.data.DataLoader(train_set, batch_size=cfg["batch_size"],
                                                     shuffle=True))
    val_loader = torch.utils.data.DataLoader(val_set, batch_size=cfg["eval_batch_size"])
    return plain_loop(model, optimizer, train_batches, val_loader)


def plain_loop(model, optimizer, train_batches, val_loader):
    """The tutorials' loop, fp32, no tricks: (train(k): k more steps from the iterator
    `train_batches`, validate(max_batches): a pass over `val_loader` without gradients). The
    reference of this benchmark and of transfer_speed.py."""
    def train(k):
        model.train()
        for x, y in itertools.islice(train_batches, k):
            loss = torch.nn.functional.cross_entropy(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()

    def validate(max_batches):
        model.eval()
        with torch.no_grad():
            for x, _ in itertools.islice(val_loader, max_batches):
                model(x)

    return train, validate


def engine_run(name, cfg, precision, train_data, val_data):
    """The pipeline's way, as a training stage runs it, on the resident tensors of
    data.load_tensors. Returns (train, validate, dtype used)."""
    device = torch.device("cpu")
    amp_dtype = autocast_dtype(device, precision)
    mean, std = data.NORMALIZATION[DATASETS[name]]
    torch.manual_seed(0)
    model = inference.prepare(models.build(name, 10), device)
    optimizer = engine.make_optimizer("adam", model.parameters(), cfg["lr"])
    train_batches = data.batches(train_data["images"], train_data["labels"], cfg["batch_size"],
                                 generator=torch.Generator().manual_seed(0), mean=mean, std=std)

    def train(k):
        engine.run_epoch(model, itertools.islice(train_batches, k), device, amp_dtype, optimizer)

    def validate(max_batches):
        engine.run_epoch(model, itertools.islice(
            data.batches(val_data["images"], val_data["labels"], cfg["eval_batch_size"],
                         mean=mean, std=std), max_batches), device, amp_dtype)

    return train, validate, precision_name(amp_dtype)


def timed_epochs(runs, train_batches, val_batches, chunk):
    """Seconds of one epoch of each run: the training passes advance together, `chunk` batches
    at a time each in turn (chunk 0: one whole epoch after the other), then the validation
    passes, so that a slow spell of a shared machine falls on all of them alike."""
    seconds = [0.0] * len(runs)
    step = chunk or train_batches
    for start in range(0, train_batches, step):
        for i, (train, _) in enumerate(runs):
            began = time.perf_counter()
            train(min(step, train_batches - start))
            seconds[i] += time.perf_counter() - began
    for i, (_, validate) in enumerate(runs):
        began = time.perf_counter()
        validate(val_batches)
        seconds[i] += time.perf_counter() - began
    return seconds


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    parser.add_argument("--max-batches", type=int, default=0,
                        help="time only this many training batches (0: the whole epoch)")
    parser.add_argument("--chunk", type=int, default=20,
                        help="training batches each run takes in turn (0: whole epochs, one "
                             "run after the other)")
    parser.add_argument("--repeat", type=int, default=1,
                        help="rounds of (reference, engine fp32, engine auto); on a shared "
                             "machine the median ratio over rounds is the steadier figure")
    args = parser.parse_args()
    for option in ("max_batches", "chunk"):
        if getattr(args, option) < 0:
            parser.error(f"--{option.replace('_', '-')} must be 0 or more, "
                         f"got {getattr(args, option)}")
    if args.repeat < 1:
        parser.error(f"--repeat must be at least 1, got {args.repeat}")
    keep_freed_memory()
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{'whole epochs' if not args.max_batches else f'{args.max_batches} batches'}, "
          f"{f'interleaved every {args.chunk} batches' if args.chunk else 'one run at a time'}"
          f", {args.repeat} round(s)")
    for name in args.models:
        cfg = params[name]
        print(f"\n{name} (batch {cfg['batch_size']}, adam lr {cfg['lr']}):", flush=True)
        folder = ROOT / "data" / "raw" / DATASETS[name]
        train_data, val_data = data.load_tensors(folder, "train"), data.load_tensors(folder, "val")
        reference_sets = reference_datasets(name, train_data, val_data)
        train_batches = math.ceil(len(train_data["labels"]) / cfg["batch_size"])
        if args.max_batches:
            train_batches = min(train_batches, args.max_batches)
        val_batches = max(1, args.max_batches // 10) if args.max_batches else None
        ratios = {}
        for round_ in range(1, args.repeat + 1):
            engines = [engine_run(name, cfg, precision, train_data, val_data)
                       for precision in ("fp32", "auto")]
            runs = [reference_run(name, cfg, *reference_sets)]
            runs += [(train, val) for train, val, _ in engines]
            ref, *times = timed_epochs(runs, train_batches, val_batches, args.chunk)
            print(f"  [{round_}] reference (DataLoader + ToTensor/Normalize, fp32): {ref:7.1f} s",
                  flush=True)
            for precision, (_, _, used), seconds in zip(("fp32", "auto"), engines, times):
                # keyed by what was asked for: on a CPU without bf16, `auto` is also float32
                ratios.setdefault((precision, used), []).append(seconds / ref)
                print(f"  [{round_}] engine (resident tensors, channels_last, {used}):"
                      f"{' ' * (10 - len(used))}{seconds:7.1f} s   ratio {seconds / ref:.2f}x",
                      flush=True)
        if args.repeat > 1:
            for (precision, used), values in ratios.items():
                rounds = ", ".join(f"{v:.2f}" for v in values)
                print(f"  engine {precision} ({used}): median ratio "
                      f"{statistics.median(values):.2f}x (rounds: {rounds})")


if __name__ == "__main__":
    try:
        main()
    except StageError as error:   # missing or damaged data: one line, as the stages say it
        sys.exit(f"error: {error}")
