"""ResNet-50 transfer learning steps at 224 px, batch 16: the pipeline's way against the
PyTorch transfer-learning tutorial's and against its own bare compute, in one process, one run;
prints times and ratios.

Reference: the tutorial (pytorch.org/tutorials/beginner/transfer_learning_tutorial):
           torchvision's ImageFolder with PIL transforms (RandomResizedCrop(224) + flip for
           training, Resize(256) + CenterCrop(224) for validation), a DataLoader with
           `transfer.num_workers` workers, torchvision's resnet50 with a new 2-class head, SGD
           (lr 0.001, momentum 0.9), fp32.
Engine:    the pipeline's code as transfer@scratch runs it: images.ImageSet (decoded once,
           resident; the decoding, once per stage run, is timed apart),
           stages.lib.models.resnet50 prepared by inference.prepare (channels_last, the CPU
           layers), engine.make_optimizer and
           engine.run_epoch in the precision `auto` picks; on a whole epoch, also the training
           state written as the stage writes it (checkpoints.StateWriter).
Compute:   the same model, optimizer and precision on batches made once, before the clock
           starts: what the engine's epoch would cost with data and checkpoint for free.
The three take turns every --chunk training batches, so that the slow spells of a shared
machine fall on all alike; then each runs its validation pass. Each time is the sum of its own
turns.

    python -m benchmarks.transfer_speed                   # one epoch of params.yaml's dataset
    python -m benchmarks.transfer_speed --max-batches 8   # quicker

Needs data/raw/<transfer.dataset> (dvc repro download@hymenoptera).
"""
import argparse
import itertools
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml

from benchmarks.epoch_speed import plain_loop
from stages.lib import images, models
from stages.lib.core import checkpoints, data, engine, inference
from stages.lib.core.common import StageError
from stages.lib.core.runtime import autocast_dtype, keep_freed_memory, precision_name

ROOT = Path(__file__).resolve().parents[1]
BATCH = 16
IMAGE = 224


def endless(loader):
    """Batches of `loader`, epoch after epoch."""
    while True:
        yield from loader


def reference_run(root, workers):
    """The tutorial's loop. Returns (train(k): k more training steps, validate(n))."""
    import torchvision
    from torchvision import transforms

    mean, std = data.NORMALIZATION["imagenet"]
    normalize = transforms.Normalize(mean, std)
    train_set = torchvision.datasets.ImageFolder(str(root / "train"), transforms.Compose([
        transforms.RandomResizedCrop(IMAGE), transforms.RandomHorizontalFlip(),
        transforms.ToTensor(), normalize]))
    val_set = torchvision.datasets.ImageFolder(str(root / "val"), transforms.Compose([
        transforms.Resize(256), transforms.CenterCrop(IMAGE), transforms.ToTensor(),
        normalize]))
    torch.manual_seed(0)
    model = torchvision.models.resnet50()
    model.fc = torch.nn.Linear(model.fc.in_features, len(train_set.classes))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.001, momentum=0.9)
    batches = endless(torch.utils.data.DataLoader(train_set, batch_size=BATCH, shuffle=True,
                                                  num_workers=workers))
    val_loader = torch.utils.data.DataLoader(val_set, batch_size=BATCH, num_workers=workers)
    return (*plain_loop(model, optimizer, batches, val_loader), len(train_set))


def engine_run(root, workers, eval_batch_size, whole_epoch):
    """transfer@scratch's way. Returns (train, validate, dtype used, seconds the decoding
    took, training and validation images)."""
    device = torch.device("cpu")
    amp_dtype = autocast_dtype(device, "auto")
    began = time.perf_counter()
    sets = [images.ImageSet(root, split, image_size=IMAGE, device=device, resident_mb=4096,
                            num_workers=workers) for split in ("train", "val")]
    decoding = time.perf_counter() - began
    torch.manual_seed(0)
    model = inference.prepare(models.build("resnet50", len(sets[0].folder.classes)), device)
    optimizer = engine.make_optimizer("sgd", model.parameters(), 0.001, 0.9)
    batches = itertools.chain.from_iterable(sets[0].batches(BATCH, e) for e in itertools.count())
    writer = checkpoints.StateWriter()

    def train(k):
        engine.run_epoch(model, itertools.islice(batches, k), device, amp_dtype, optimizer)

    def validate(max_batches):
        engine.run_epoch(model, itertools.islice(sets[1].batches(eval_batch_size), max_batches),
                         device, amp_dtype)
        if whole_epoch:   # the stage's checkpoint, written while the stage would go on
            with tempfile.TemporaryDirectory() as folder:
                writer.save(Path(folder) / "state.pt", "benchmark", model=model,
                            optimizer=optimizer, scheduler=None, scaler=None, rng=[],
                            history=[{}])
                writer.wait()

    return train, validate, precision_name(amp_dtype), decoding, len(sets[0]), len(sets[1])


def compute_run(train_images, val_images, eval_batch_size, classes=2):
    """The engine's model, optimizer and precision on batches built before the clock starts."""
    device = torch.device("cpu")
    amp_dtype = autocast_dtype(device, "auto")
    torch.manual_seed(0)
    model = inference.prepare(models.build("resnet50", classes), device)
    optimizer = engine.make_optimizer("sgd", model.parameters(), 0.001, 0.9)

    def made(n, size):
        return [(torch.randn(min(size, n - i), 3, IMAGE, IMAGE),
                 torch.randint(0, classes, (min(size, n - i),))) for i in range(0, n, size)]

    batches = itertools.cycle(made(train_images, BATCH))
    val = made(val_images, eval_batch_size)

    def train(k):
        engine.run_epoch(model, itertools.islice(batches, k), device, amp_dtype, optimizer)

    def validate(max_batches):
        engine.run_epoch(model, itertools.islice(val, max_batches), device, amp_dtype)

    return train, validate


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--max-batches", type=int, default=0,
                        help="time only this many training batches (0: a whole epoch)")
    parser.add_argument("--chunk", type=int, default=4,
                        help="training batches each side takes in turn")
    args = parser.parse_args()
    if args.max_batches < 0 or args.chunk < 1:
        parser.error("--max-batches must be 0 or more and --chunk at least 1")
    keep_freed_memory()
    cfg = yaml.safe_load((ROOT / "params.yaml").read_text())["transfer"]
    root = data.raw_folder(cfg["dataset"])
    root = root if root.is_absolute() else ROOT / root
    if not root.is_dir():
        raise StageError(f"{root} not found: run `dvc repro download@{cfg['dataset']}` first")
    ref_train, ref_val, n_train = reference_run(root, cfg["num_workers"])
    steps = -(-n_train // BATCH)
    if args.max_batches:
        steps = min(steps, args.max_batches)
    val_batches = max(1, steps // 2) if args.max_batches else None
    eng_train, eng_val, used, decoding, n_train, n_val = engine_run(
        root, cfg["num_workers"], cfg["eval_batch_size"], whole_epoch=not args.max_batches)
    bare_train, bare_val = compute_run(n_train, n_val, cfg["eval_batch_size"])
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {cfg['dataset']}: "
          f"{steps} training steps of {BATCH} images at {IMAGE} px, then validation, "
          f"{cfg['num_workers']} loader workers", flush=True)
    sides = [(ref_train, ref_val), (eng_train, eng_val), (bare_train, bare_val)]
    seconds = [0.0] * len(sides)
    for start in range(0, steps, args.chunk):
        for i, (train, _) in enumerate(sides):
            began = time.perf_counter()
            train(min(args.chunk, steps - start))
            seconds[i] += time.perf_counter() - began
    for i, (_, validate) in enumerate(sides):
        began = time.perf_counter()
        validate(val_batches)
        seconds[i] += time.perf_counter() - began
    ref, eng, bare = seconds
    print(f"  reference (tutorial: ImageFolder + PIL transforms + DataLoader, fp32): "
          f"{ref:7.1f} s", flush=True)
    print(f"  engine (transfer@scratch's: decoded once, resident, channels_last, {used}):"
          f"{' ' * (9 - len(used))}{eng:7.1f} s   ratio {eng / ref:.2f}x", flush=True)
    print(f"    and, once per stage run before its first epoch, decoding the images: "
          f"{decoding:.1f} s", flush=True)
    print(f"  its bare compute (batches made before the clock, {used}):"
          f"{' ' * (24 - len(used))}{bare:7.1f} s   engine / compute {eng / bare:.2f}x",
          flush=True)


if __name__ == "__main__":
    try:
        main()
    except StageError as error:
        sys.exit(f"error: {error}")
