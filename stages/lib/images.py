"""ImageFolder data (the transfer set): its layout, decoding each image once, and batches on the
device, augmented there.

Each image is decoded and resized once, with PIL, into a uint8 tensor: the evaluation view
(short side resized to 8/7 of `image_size`, 256 for 224, as torchvision's ImageNet evaluation,
then the centre crop) or, when training augments the whole picture (a random crop or a
rotation), the source picture at most SOURCE_SIDE times `image_size` on its short side. A set
whose tensors fit `transfer.resident_mb` is decoded once and kept on the device (as MNIST and
CIFAR-10 are); a larger one is decoded by DataLoader workers at every pass. Either way the
batches are the same: the order is torch's DistributedSampler's (seeded by `seed` and the
epoch), and the augmentation runs on the device, after the batch is gathered, with
torchvision's v2 transforms drawing from a generator of the stage's own, so that results do
not depend on the number of workers nor on whether the set is resident.
"""
import shutil
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torchvision.datasets import ImageFolder
from torchvision.datasets.folder import IMG_EXTENSIONS
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from .core.common import StageError, seed_for
from .core.data import SPLITS, subsample
from .core.names import check_class_name, normalised

SOURCE_SIDE = 2   # the source pictures random crops are cut from: short side <= 2 x image_size
SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N")   # PIL's modes of 16-bit grey pixels


def hidden(name):
    """Entries an archive carries that are no data: dot files and folders (.DS_Store, macOS's
    AppleDouble ._photo.jpg, .git/) and __MACOSX/."""
    return name.startswith(".") or name == "__MACOSX"


def tidy(root, label):
    """An unpacked ImageFolder made into what the stages read: hidden entries removed (else
    ImageFolder takes `._photo.jpg` for a picture and `.thumbnails/` for a class) and class
    folders renamed to their normalised names (names.normalised: NFC, no spaces around);
    two folders that normalise to one name are refused. Returns the removed entries."""
    root = Path(root)
    removed = []
    for path in sorted(root.rglob("*"), key=lambda p: len(p.parts)):
        if path.exists() and hidden(path.name):
            folder = path.is_dir() and not path.is_symlink()
            removed.append(path.relative_to(root).as_posix() + ("/" if folder else ""))
            if folder:
                shutil.rmtree(path)
            else:
                path.unlink()
    for split in SPLITS:
        folder = root / split
        if not folder.is_dir():
            continue
        seen = {}
        for path in sorted(p for p in folder.iterdir() if p.is_dir()):
            name = normalised(path.name)
            if name in seen:
                raise StageError(f"{label}: class folders {seen[name].name!r} and "
                                 f"{path.name!r} of {split}/ are one name written two ways "
                                 "(Unicode normalisation or spaces around it): merge them")
            seen[name] = path
        for name, path in seen.items():   # all checked first: no rename onto a twin
            if name != path.name:
                path.rename(folder / name)
    return removed


def check_pictures(root, label):
    """Decode every picture ImageFolder would read under root/<split>/ (load_image: the same
    reader as training): an empty, truncated or non-image file is named here, at download,
    not in the middle of a training. Returns the number of pictures."""
    bad, count = [], 0
    for split in SPLITS:
        for path in sorted((Path(root) / split).rglob("*")):
            if path.is_file() and path.suffix.lower() in IMG_EXTENSIONS:
                count += 1
                try:
                    read_rgb(path)
                except (Image.DecompressionBombError, OSError, SyntaxError, ValueError,
                        StageError) as error:
                    bad.append(f"{path.relative_to(root).as_posix()} ({error})")
    if bad:
        raise StageError(f"{label}: {len(bad)} of {count} pictures cannot be read, e.g. "
                         f"{'; '.join(bad[:3])}: remove or replace them")
    return count


def image_folder_classes(root, label=None):
    """Check an ImageFolder layout (train/<class>/..., val/<class>/...) and return its classes.
    Errors name the dataset as `label` (default: the folder)."""
    root = Path(root)
    label = label or str(root)
    classes = None
    for split in SPLITS:
        folder = root / split
        if not folder.is_dir():
            raise StageError(f"{label} has no {split}/ folder (expected {split}/<class>/<images>)")
        found = sorted(p.name for p in folder.iterdir() if p.is_dir())
        for name in found:
            check_class_name(name, f"{label}: class folder {split}/")
        if len(found) < 2:
            raise StageError(f"{label}: {split}/ needs at least two class folders, "
                             f"found {len(found)}")
        for name in found:
            images = [p for p in (folder / name).rglob("*")
                      if p.is_file() and p.suffix.lower() in IMG_EXTENSIONS]
            if not images:
                raise StageError(f"{label}: class folder {split}/{name} has no images "
                                 f"({', '.join(IMG_EXTENSIONS)})")
        if classes is not None and found != classes:
            raise StageError(f"{label}: train and val classes differ: {classes} vs {found}")
        classes = found
    return classes


def read_rgb(path):
    with open(path, "rb") as f:
        return rgb(Image.open(f), path)


def load_image(path):
    """PIL loader for ImageFolder: an RGB picture (rgb()), or one line naming the file."""
    try:
        return read_rgb(path)
    except Image.DecompressionBombError:
        raise StageError(f"image {path} is too large to decode safely (more than "
                         f"{2 * Image.MAX_IMAGE_PIXELS:,} pixels: a decompression bomb?); "
                         "remove it from the dataset") from None
    except (OSError, SyntaxError, ValueError) as error:
        raise StageError(f"cannot read image {path}: {error}") from None


def rgb(image, path):
    """`image` as 8-bit RGB. PIL's own convert("RGB") clips 16-bit grey to 255 (a picture turns
    white): those are scaled, 65535 to 255; 32-bit integer and floating-point pixels have no
    agreed range and are refused."""
    if image.mode in SIXTEEN_BIT or image.mode == "I":
        values = np.asarray(image, dtype=np.int64)
        if values.size and (values.min() < 0 or values.max() > 65535):
            raise StageError(f"image {path} has 32-bit pixels ({values.min()} to "
                             f"{values.max()}): save it with 8 or 16 bits per channel")
        top = 255 if image.mode == "I" and (not values.size or values.max() <= 255) else 65535
        image = Image.fromarray(np.rint(values * (255 / top)).astype(np.uint8), "L")
    elif image.mode == "F":
        raise StageError(f"image {path} has floating-point pixels: save it with 8 or 16 bits "
                         "per channel")
    return image.convert("RGB")


def image_folder(root, split, transform, samples=None, seed=0):
    """The ImageFolder at root/split; `samples` (None: all) keeps that many images, picked by
    data.subsample(): still an ImageFolder, its .samples and .targets cut to them."""
    dataset = ImageFolder(str(Path(root) / split), transform=transform, loader=load_image)
    if samples is not None:
        keep = subsample(len(dataset), samples, seed)
        dataset.samples = dataset.imgs = [dataset.samples[i] for i in keep]
        dataset.targets = [dataset.targets[i] for i in keep]
    return dataset


def whole_picture(augment):
    """Whether training with `augment` (a params.Augment, or None) transforms the whole
    picture (random crop, rotation) rather than the evaluation view."""
    return augment is not None and bool(augment.random_crop or augment.rotation)


def decode_transform(image_size, augment=None):
    """PIL image -> the uint8 tensor kept for it (see the module's docstring)."""
    if whole_picture(augment):
        return v2.Compose([v2.PILToTensor(), ShrinkTo(SOURCE_SIDE * image_size)])
    return v2.Compose([v2.Resize(round(image_size * 8 / 7)), v2.CenterCrop(image_size),
                       v2.PILToTensor()])


class ShrinkTo(torch.nn.Module):
    """Resize a picture whose short side is longer than `side` down to it; a smaller one is
    kept as it is."""

    def __init__(self, side):
        super().__init__()
        self.side = side

    def forward(self, image):
        return F.resize(image, self.side, antialias=True) \
            if min(image.shape[-2:]) > self.side else image


def device_augmentation(image_size, augment):
    """The training augmentation, on one uint8 image tensor on any device (torchvision's v2
    transforms, in the order the PIL pipeline applied them), or None without augmentation.
    `augment`: a params.Augment: rotation (degrees), random_crop (RandomResizedCrop with scale
    (crop_scale_min, 1)), hflip, color_jitter (brightness/contrast/saturation strength)."""
    if augment is None or not augment.any():
        return None
    steps = []
    if augment.rotation:
        steps.append(v2.RandomRotation(augment.rotation))
    if augment.random_crop:
        steps.append(v2.RandomResizedCrop(image_size, scale=(augment.crop_scale_min, 1.0),
                                          antialias=True))
    elif augment.rotation:   # the source picture: the evaluation view of it, after rotating
        steps += [v2.Resize(round(image_size * 8 / 7), antialias=True),
                  v2.CenterCrop(image_size)]
    if augment.hflip:
        steps.append(v2.RandomHorizontalFlip())
    if augment.color_jitter:
        s = augment.color_jitter
        steps.append(v2.ColorJitter(brightness=s, contrast=s, saturation=s))
    return v2.Compose(steps)


def pass_order(n, seed, epoch=None, shard=(0, 1)):
    """Indices of n items in the order of one pass. Training (`epoch` given): torch's
    DistributedSampler's shuffle for `seed` and `epoch`, this rank's positions of it (every rank
    as many, the first few repeated when n does not divide by the world): the ranks' shares of
    step k together are the one-process batch k. Evaluation: items rank, rank + world, ...,
    each once."""
    rank, world = shard
    if epoch is None:
        return list(range(rank, n, world))
    sampler = torch.utils.data.DistributedSampler(range(n), num_replicas=world, rank=rank,
                                                  shuffle=True, seed=seed)
    sampler.set_epoch(epoch)
    return list(sampler)


def decoded(folder, chunks, num_workers, device, stacked):
    """The images of `folder` (an ImageFolder whose transform decodes: decode_transform) for
    each chunk of indices in turn, decoded by `num_workers` DataLoader workers: one uint8
    tensor per chunk when every picture has one size (`stacked`), else a list."""
    return iter(torch.utils.data.DataLoader(
        _Pictures(folder), batch_sampler=chunks, num_workers=num_workers,
        collate_fn=torch.stack if stacked else list, pin_memory=device.type == "cuda",
        generator=torch.Generator()))   # workers draw nothing; keeps torch's global RNG


def resident_store(folder, device, num_workers, stacked):
    """Every image of `folder` decoded once onto `device`, and the function that gives a
    pass's batches from them: for chunks of indices, a uint8 tensor per chunk (`stacked`) or
    a list of pictures of their own sizes."""
    chunks = [range(i, min(i + 32, len(folder))) for i in range(0, len(folder), 32)]
    images = [image for batch in decoded(folder, chunks, num_workers, device, False)
              for image in batch]
    if stacked:
        images = torch.stack(images).to(device)
        return images.nbytes, lambda chunks: (images[torch.tensor(idx, device=device)]
                                              for idx in chunks)
    images = [image.to(device) for image in images]
    return sum(i.nbytes for i in images), lambda chunks: ([images[i] for i in idx]
                                                          for idx in chunks)


class ImageSet:
    """One split of an ImageFolder as a stage uses it: `files` (paths under the split),
    `labels`, and `batches()`, normalized by `normalization` ((mean, std) per channel, those
    of the weights the network starts from) and, in training, augmented on the device.
    Storage: decoded once and resident on `device` when the decoded images fit `resident_mb`,
    else decoded at every pass by `num_workers` DataLoader workers; the batches are the same
    to the bit either way."""

    def __init__(self, root, split, *, image_size, device, resident_mb, num_workers,
                 normalization, samples=None, seed=0, augment=None, rank=0):
        self.folder = image_folder(root, split, decode_transform(image_size, augment),
                                   samples, seed)
        self.files = [p for p, _ in self.folder.samples]
        self.labels = torch.tensor(self.folder.targets, dtype=torch.int64)
        self.device, self.seed = device, seed
        self.mean, self.std = (torch.tensor(v, device=device).view(1, -1, 1, 1)
                               for v in normalization)
        self.augmentation = device_augmentation(image_size, augment)
        # augmentation draws (torchvision's v2 transforms take no generator): from torch's
        # global generator, seeded per batch from this one and put back (see _augmented)
        self.generator = torch.Generator().manual_seed(seed_for(seed, "augment", rank))
        stacked = not whole_picture(augment)   # every image the same size: one tensor
        if bytes_needed(self.files, image_size, stacked, resident_mb * 2**20) \
                <= resident_mb * 2**20:
            size, self._pictures = resident_store(self.folder, device, num_workers, stacked)
            self.resident, self.storage = True, f"resident ({size / 2**20:.0f} MB)"
        else:
            self._pictures = lambda chunks: decoded(self.folder, chunks, num_workers, device,
                                                    stacked)
            self.resident = False
            self.storage = "decoded at every pass (more than transfer.resident_mb)"

    def __len__(self):
        return len(self.labels)

    def describe(self):
        """How the images come: 'resident (N MB)' or 'decoded at every pass'."""
        return self.storage

    def batches(self, batch_size, epoch=None, shard=(0, 1)):
        """(images normalized to float on the device, labels) of one pass: training with
        `epoch` (shuffled, augmented; batch_size / world images per rank and step),
        evaluation without (see pass_order)."""
        order = pass_order(len(self), self.seed, epoch, shard)
        if epoch is not None:
            batch_size //= shard[1]
        chunks = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
        augment = self.augmentation if epoch is not None else None
        for idx, batch in zip(chunks, self._pictures(chunks)):
            x = self._augmented(batch, augment)
            yield (x.float().div_(255) - self.mean) / self.std, self.labels[idx]

    def _augmented(self, batch, augment):
        """The batch as one uint8 tensor on the device, each image through `augment`: its
        random draws come from torch's global generator, seeded for the batch from
        self.generator and restored after, so they do not depend on who decoded the batch
        and leave the global stream where it was."""
        if augment is None:
            return batch.to(self.device) if isinstance(batch, torch.Tensor) \
                else torch.stack([image.to(self.device) for image in batch])
        seed = int(torch.randint(2**62, (), generator=self.generator))
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(seed)
            return torch.stack([augment(image.to(self.device)) for image in batch])


def bytes_needed(files, image_size, stacked, limit):
    """The bytes the decoded images of `files` take, counted up to `limit` (a larger set
    streams; its exact size does not matter). Source pictures (not `stacked`) are measured
    from their headers."""
    if stacked:
        return len(files) * 3 * image_size ** 2
    side, total = SOURCE_SIDE * image_size, 0
    for path in files:
        try:
            with Image.open(path) as image:
                w, h = image.size
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError):
            continue   # unreadable: decoding it names it, before training starts
        short, long = sorted((w, h))
        if short > side:   # as torchvision's resize(side) rounds
            short, long = side, int(side * long / short)
        total += 3 * short * long
        if total > limit:
            break
    return total


class _Pictures(torch.utils.data.Dataset):
    """An ImageFolder's decoded images without their labels (ImageSet holds those)."""

    def __init__(self, folder):
        self.folder = folder

    def __len__(self):
        return len(self.folder)

    def __getitem__(self, index):
        return self.folder[index][0]
