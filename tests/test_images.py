"""The transfer set's images (stages/lib/images.py): decoded once into what torchvision's PIL
pipeline gives, resident or decoded at every pass with the same batches, augmented on the
device from the set's own generator whatever the number of workers."""
import numpy as np
import pytest
import torch

from stages.lib import images
from stages.lib.core.common import StageError
from stages.lib.core.data import NORMALIZATION
from stages.lib.core.params import Augment

SIZE = 24
NONE = Augment(random_crop=False, crop_scale_min=0.08, hflip=False, color_jitter=0.0,
               rotation=0.0)
FULL = Augment(random_crop=True, crop_scale_min=0.3, hflip=True, color_jitter=0.3,
               rotation=10.0)
FLIP_JITTER = Augment(random_crop=False, crop_scale_min=0.08, hflip=True, color_jitter=0.3,
                      rotation=0.0)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """train/ and val/ with two classes of pictures of mixed sizes and shapes, some larger
    than images.SOURCE_SIDE x SIZE on their short side."""
    from PIL import Image

    root = tmp_path_factory.mktemp("set")
    rng = np.random.default_rng(0)
    shapes = [(30, 40), (52, 31), (70, 90), (120, 64), (28, 28), (33, 101), (64, 48)]
    for split, n in (("train", 7), ("val", 5)):
        for k in range(n):
            for c, name in enumerate(("ants", "bees")):
                h, w = shapes[(k + c) % len(shapes)]
                pixels = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
                pixels[:, : w // 3] //= 1 + c   # a little class signal
                folder = root / split / name
                folder.mkdir(parents=True, exist_ok=True)
                Image.fromarray(pixels).save(folder / f"{k}.png")
    return root


def image_set(root, split, augment=None, resident_mb=64, workers=0, **kw):
    return images.ImageSet(root, split, image_size=SIZE, device=torch.device("cpu"),
                           resident_mb=resident_mb, num_workers=workers, seed=5,
                           augment=augment, **kw)


def passes(image_set, epochs=(1, 2), batch=4):
    return [(x.clone(), y.clone()) for e in epochs for x, y in image_set.batches(batch, e)]


def test_the_evaluation_view_is_torchvisions_imagenet_evaluation(folder):
    """Decoded once, normalized on the fly: the same floats as Resize(8/7) + CenterCrop +
    ToTensor + Normalize on each PIL image (the pipeline every run had before)."""
    from torchvision import transforms as T

    reference = T.Compose([T.Resize(round(SIZE * 8 / 7)), T.CenterCrop(SIZE), T.ToTensor(),
                           T.Normalize(*NORMALIZATION["imagenet"])])
    val = image_set(folder, "val")
    assert val.resident
    x = torch.cat([x for x, _ in val.batches(3)])
    expected = torch.stack([reference(images.load_image(f)) for f in val.files])
    assert torch.equal(x, expected)
    assert torch.cat([y for _, y in val.batches(3)]).tolist() == val.folder.targets


@pytest.mark.parametrize("augment", [None, FLIP_JITTER, FULL], ids=["none", "flip", "full"])
@pytest.mark.parametrize("resident_mb, workers", [(64, 2), (0, 0), (0, 1), (0, 2), (0, 3)])
def test_resident_and_decoded_every_pass_give_the_same_batches(folder, augment, resident_mb,
                                                               workers):
    """transfer.resident_mb and transfer.num_workers are no stage's params (dvc.yaml): what
    the network sees, train and validation, is the same to the bit whatever they say."""
    reference = image_set(folder, "train", augment)
    other = image_set(folder, "train", augment, resident_mb=resident_mb, workers=workers)
    assert reference.resident and other.resident == (resident_mb > 0)
    if not other.resident:
        assert "decoded at every pass" in other.describe()
    for (a, y), (b, z) in zip(passes(reference), passes(other), strict=True):
        assert torch.equal(a, b) and torch.equal(y, z)
    val, other_val = image_set(folder, "val"), image_set(folder, "val", None, resident_mb,
                                                         workers)
    for (a, y), (b, z) in zip(val.batches(3), other_val.batches(3), strict=True):
        assert torch.equal(a, b) and torch.equal(y, z)


def test_augmentation_is_seeded_by_the_sets_generator_alone(folder):
    one = image_set(folder, "train", FULL)
    state = one.generator.get_state()
    first = passes(one, epochs=(1,))
    torch.manual_seed(123)   # torch's global generator plays no part, nor is it moved
    global_state = torch.get_rng_state()
    one.generator.set_state(state)
    again = passes(one, epochs=(1,))
    assert torch.equal(torch.get_rng_state(), global_state)
    assert all(torch.equal(a, b) for (a, _), (b, _) in zip(first, again, strict=True))
    later = passes(one, epochs=(1,))   # the generator moved on: other draws, same order
    assert not all(torch.equal(a, b) for (a, _), (b, _) in zip(first, later))
    assert [y.tolist() for _, y in first] == [y.tolist() for _, y in later]
    other_rank = image_set(folder, "train", FULL, rank=1)
    assert not torch.equal(passes(other_rank, epochs=(1,))[0][0], first[0][0])


def test_training_without_augmentation_sees_the_evaluation_view(folder):
    plain, off = image_set(folder, "train"), image_set(folder, "train", NONE)
    evaluation = torch.cat([x for x, _ in plain.batches(100)])
    for x, _ in (*passes(plain), *passes(off)):
        assert x.shape[1:] == (3, SIZE, SIZE)
    order = images.pass_order(len(plain), 5, 1)
    x = torch.cat([x for x, _ in plain.batches(4, 1)])
    assert torch.equal(x, evaluation[order])
    assert all(torch.equal(a, b) for (a, _), (b, _) in zip(passes(plain), passes(off)))


def test_full_augmentation_changes_the_pictures_and_keeps_their_size(folder):
    plain, augmented = image_set(folder, "train"), image_set(folder, "train", FULL)
    a, b = passes(plain, epochs=(1,)), passes(augmented, epochs=(1,))
    for (x, y), (u, v) in zip(a, b, strict=True):
        assert u.shape == x.shape and torch.equal(y, v) and not torch.equal(u, x)


def test_source_pictures_are_shrunk_only_above_their_bound(folder):
    source = image_set(folder, "train", FULL)
    side = images.SOURCE_SIDE * SIZE
    assert not source.stacked
    from PIL import Image

    for picture, path in zip(source.images, source.files, strict=True):
        w, h = Image.open(path).size
        if min(w, h) <= side:
            assert tuple(picture.shape) == (3, h, w)
        else:
            assert min(picture.shape[1:]) == side
            assert abs(picture.shape[2] / picture.shape[1] - w / h) < 0.05


def test_the_memory_budget_decides_residence(folder):
    stacked = image_set(folder, "val")
    assert stacked.bytes_needed(SIZE, limit=10**9) == len(stacked) * 3 * SIZE**2
    need = image_set(folder, "train", FULL, resident_mb=0).bytes_needed(SIZE, 10**9)
    held = sum(p.nbytes for p in image_set(folder, "train", FULL).images)
    assert need == held
    tiny = images.ImageSet(folder, "val", image_size=SIZE, device=torch.device("cpu"),
                           resident_mb=0, num_workers=0)
    assert not tiny.resident and tiny.images is None


def test_shards_evaluate_every_image_once_and_train_on_their_positions(folder):
    whole = image_set(folder, "train")
    one = [y for _, y in whole.batches(4, 1)]
    shares = [[y for _, y in whole.batches(4, 1, shard=(r, 2))] for r in range(2)]
    for k, step in enumerate(one):   # ranks take alternate positions of each global step
        together = torch.stack([shares[0][k], shares[1][k]], 1).flatten()
        assert torch.equal(together[:len(step)], step)
    val = image_set(folder, "val")
    seen = sorted(i for r in range(3) for i in images.pass_order(len(val), 5, None, (r, 3)))
    assert seen == list(range(len(val)))
    assert sum(len(y) for r in range(3) for _, y in val.batches(2, shard=(r, 3))) == len(val)


@pytest.mark.parametrize("augment, resident_mb", [(None, 64), (FULL, 64), (None, 0)],
                         ids=["decoded-once", "source-header", "every-pass"])
def test_an_unreadable_picture_is_named(folder, tmp_path, augment, resident_mb):
    import shutil

    root = tmp_path / "set"
    shutil.copytree(folder, root)
    victim = sorted((root / "train/bees").iterdir())[0]
    victim.write_bytes(b"not a picture")
    with pytest.raises(StageError, match=rf"cannot read image .*{victim.name}"):
        found = image_set(root, "train", augment, resident_mb=resident_mb)
        assert not found.resident   # a resident set names it before any pass
        passes(found, epochs=(1,))
