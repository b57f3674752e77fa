"""ResNet-50 transfer learning steps at 224 px, batch 16: the pipeline's way against the
PyTorch transfer-learning tutorial's, in one process, one run; prints times and the ratio.

Reference: the tutorial (pytorch.org/tutorials/beginner/transfer_learning_tutorial):
           torchvision's ImageFolder with PIL transforms (RandomResizedCrop(224) + flip for
           training, Resize(256) + CenterCrop(224) for validation), a DataLoader with
           `transfer.num_workers` workers, torchvision's resnet50 with a new 2-class head, SGD
           (lr 0.001, momentum 0.9), fp32.
Engine:    the pipeline's code as transfer@scratch runs it: data.image_folder and
           data.image_loader with the stage's transforms, stages.lib.models.ResNet50 prepared
           by engine.prepare (channels_last, the CPU layers), engine.make_optimizer and
           engine.run_epoch in the precision `auto` picks.
The two take turns every --chunk training batches, so that the slow spells of a shared machine
fall on both alike; then each runs its validation pass. Each time is the sum of its own turns.

    python benchmarks/transfer_speed.py                   # one epoch of params.yaml's dataset
    python benchmarks/transfer_speed.py --max-batches 8   # quicker

Needs data/raw/<transfer.dataset> (dvc repro download@hymenoptera).
"""
import argparse
import itertools
import sys
import time
from pathlib import Path

import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from stages.lib import data, engine, models  # noqa: E402
from stages.lib.common import StageError  # noqa: E402
from stages.lib.runtime import autocast_dtype, keep_freed_memory, precision_name  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from epoch_speed import plain_loop  # noqa: E402

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


def engine_run(root, workers, eval_batch_size):
    """transfer@scratch's way. Returns (train, validate, dtype used)."""
    device = torch.device("cpu")
    amp_dtype = autocast_dtype(device, "auto")
    train_set = data.image_folder(root, "train", data.image_transforms(IMAGE))
    val_set = data.image_folder(root, "val", data.image_transforms(IMAGE))
    torch.manual_seed(0)
    model = engine.prepare(models.ResNet50(len(train_set.classes)), device)
    optimizer = engine.make_optimizer("sgd", model.parameters(), 0.001, 0.9)
    loader = data.image_loader(train_set, BATCH, shuffle=True, num_workers=workers, seed=0,
                               device=device)
    batches = endless(loader)
    val_loader = data.image_loader(val_set, eval_batch_size, shuffle=False,
                                   num_workers=workers, seed=0, device=device)

    def train(k):
        engine.run_epoch(model, itertools.islice(batches, k), device, amp_dtype, optimizer)

    def validate(max_batches):
        engine.run_epoch(model, itertools.islice(val_loader, max_batches), device, amp_dtype)

    return train, validate, precision_name(amp_dtype)


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
    ref_train, ref_val, images = reference_run(root, cfg["num_workers"])
    eng_train, eng_val, used = engine_run(root, cfg["num_workers"], cfg["eval_batch_size"])
    steps = -(-images // BATCH)
    if args.max_batches:
        steps = min(steps, args.max_batches)
    val_batches = max(1, steps // 2) if args.max_batches else None
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {cfg['dataset']}: "
          f"{steps} training steps of {BATCH} images at {IMAGE} px, then validation, "
          f"{cfg['num_workers']} loader workers", flush=True)
    seconds = [0.0, 0.0]
    for start in range(0, steps, args.chunk):
        for i, train in enumerate((ref_train, eng_train)):
            began = time.perf_counter()
            train(min(args.chunk, steps - start))
            seconds[i] += time.perf_counter() - began
    for i, validate in enumerate((ref_val, eng_val)):
        began = time.perf_counter()
        validate(val_batches)
        seconds[i] += time.perf_counter() - began
    ref, eng = seconds
    print(f"  reference (tutorial: ImageFolder + PIL transforms + DataLoader, fp32): "
          f"{ref:7.1f} s", flush=True)
    print(f"  engine (transfer@scratch's loaders, channels_last, {used}):"
          f"{' ' * (19 - len(used))}{eng:7.1f} s   ratio {eng / ref:.2f}x", flush=True)


if __name__ == "__main__":
    try:
        main()
    except StageError as error:
        sys.exit(f"error: {error}")
