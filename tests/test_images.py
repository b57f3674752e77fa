"""The transfer set's images (stages/lib/images.py): decoded once into what torchvision's PIL
pipeline gives, resident or decoded at every pass with the same batches, augmented on the
device from the set's own generator whatever the number of workers."""
import struct
import zlib

import numpy as np
import pytest
import torch

from stages.lib import images
from stages.lib.core.common import StageError
from stages.lib.core.data import NORMALIZATION
from stages.lib.core.params import Augment

SIZE = 24
CPU = torch.device("cpu")
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
    return images.ImageSet(root, split, image_size=SIZE, device=CPU,
                           resident_mb=resident_mb, num_workers=workers, seed=5,
                           normalization=NORMALIZATION["imagenet"], augment=augment, **kw)


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
    assert images.whole_picture(FULL)   # pictures of their own sizes: a list, not one tensor
    from PIL import Image

    _, pictures = images.resident_store(source.folder, CPU, 0, stacked=False)
    (kept,) = pictures([range(len(source))])
    for picture, path in zip(kept, source.files, strict=True):
        w, h = Image.open(path).size
        if min(w, h) <= side:
            assert tuple(picture.shape) == (3, h, w)
        else:
            assert min(picture.shape[1:]) == side
            assert abs(picture.shape[2] / picture.shape[1] - w / h) < 0.05


def test_the_memory_budget_decides_residence(folder):
    stacked = image_set(folder, "val")
    assert images.bytes_needed(stacked.files, SIZE, True, limit=10**9) == \
        len(stacked) * 3 * SIZE**2
    source = image_set(folder, "train", FULL, resident_mb=0)
    assert not source.resident
    need = images.bytes_needed(source.files, SIZE, False, 10**9)
    held, _ = images.resident_store(source.folder, CPU, 0, stacked=False)
    assert need == held
    tiny = images.ImageSet(folder, "val", image_size=SIZE, device=CPU, resident_mb=0,
                           num_workers=0, normalization=NORMALIZATION["imagenet"])
    assert not tiny.resident and tiny.describe().startswith("decoded at every pass")


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


# Pictures read as they are (hardening round 4): modes, hidden entries, names, bad files.

def save_png(path, array, mode=None):
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array, mode).save(path)
    return path


def test_a_16_bit_picture_is_scaled_not_clipped(tmp_path):
    """PIL's own convert("RGB") clips 16-bit grey to white (mean 254.5 of 255 for this ramp)."""
    ramp = np.linspace(0, 65535, 64 * 64).reshape(64, 64).astype(np.uint16)
    picture = np.asarray(images.load_image(save_png(tmp_path / "ramp16.png", ramp)))
    assert picture.shape == (64, 64, 3) and picture[0, 0, 0] == 0 and picture[-1, -1, 0] == 255
    assert abs(picture.mean() - 127.5) < 0.6
    eight = np.asarray(images.load_image(save_png(tmp_path / "ramp8.png",
                                                  (ramp // 257).astype(np.uint8))))
    assert np.abs(picture.astype(int) - eight.astype(int)).max() <= 1


def test_32_bit_and_floating_point_pixels_are_refused_in_one_line(tmp_path):
    from PIL import Image

    wide = Image.fromarray(np.full((8, 8), 1 << 20, dtype=np.int32), "I")
    floats = Image.fromarray(np.full((8, 8), 0.5, dtype=np.float32), "F")
    for image, pattern in ((wide, "32-bit pixels"), (floats, "floating-point pixels")):
        with pytest.raises(StageError, match=f"image x.tif has {pattern}.*8 or 16 bits"):
            images.rgb(image, "x.tif")


def write_tree(root, files):
    for name, content in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)


def test_hidden_entries_are_left_out_and_class_names_normalised(tmp_path):
    import unicodedata

    picture = save_png(tmp_path / "p.png", np.zeros((4, 4, 3), np.uint8)).read_bytes()
    nfd = unicodedata.normalize("NFD", "café")
    write_tree(tmp_path / "set", {
        "train/ants/a.png": picture, "train/ants/._a.png": b"\x00\x05\x16\x07 AppleDouble",
        "train/.thumbnails/t.png": picture, "train/.DS_Store": b"x",
        f"train/{nfd}/b.png": picture, "val/ants /c.png": picture, f"val/{nfd}/d.png": picture,
        "__MACOSX/train/ants/._a.png": b"x", "val/ants /.hidden.png": picture})
    removed = images.tidy(tmp_path / "set", "set")
    assert sorted(removed) == ["__MACOSX/", "train/.DS_Store", "train/.thumbnails/",
                               "train/ants/._a.png", "val/ants /.hidden.png"]
    assert images.image_folder_classes(tmp_path / "set") == ["ants", "café"]
    assert [p.name for p in (tmp_path / "set/train").iterdir() if p.name.startswith("caf")] \
        == ["café"]   # NFC now: one name, printed and compared alike
    assert images.check_pictures(tmp_path / "set", "set") == 4


@pytest.mark.parametrize("first, second", [("ants", "ants "), ("café", "cafe\u0301")])
def test_two_folders_that_normalise_to_one_name_are_refused(tmp_path, first, second):
    picture = save_png(tmp_path / "p.png", np.zeros((4, 4, 3), np.uint8)).read_bytes()
    write_tree(tmp_path / "set", {f"train/{first}/a.png": picture,
                                  f"train/{second}/b.png": picture})
    with pytest.raises(StageError, match=r"set: class folders .* of train/ are one name written "
                                         r"two ways .*merge them"):
        images.tidy(tmp_path / "set", "set")


def test_every_picture_is_decoded_and_a_bad_one_named(tmp_path):
    good = save_png(tmp_path / "p.png", np.zeros((4, 4, 3), np.uint8))
    jpeg = tmp_path / "p.jpg"
    from PIL import Image

    Image.new("RGB", (64, 64), "red").save(jpeg, quality=90)
    write_tree(tmp_path / "set", {
        "train/ants/good.png": good.read_bytes(), "train/ants/empty.jpg": b"",
        "train/bees/cut.jpg": jpeg.read_bytes()[:200], "val/ants/notes.jpg": b"not a picture",
        "val/bees/good.jpg": jpeg.read_bytes(), "val/bees/readme.txt": b"ignored"})
    with pytest.raises(StageError) as raised:
        images.check_pictures(tmp_path / "set", "hymenoptera")
    message = str(raised.value)
    assert "\n" not in message and message.startswith("hymenoptera: 3 of 5 pictures cannot be "
                                                      "read, e.g. train/ants/empty.jpg (")
    assert "train/bees/cut.jpg (" in message and "remove or replace them" in message


def test_a_long_class_name_is_called_long():
    from stages.lib.core.names import check_class_name

    with pytest.raises(StageError, match="a class name of 150 characters, longer than 100"):
        check_class_name("a" * 150, "set: class folder train/")
    check_class_name("a" * 100, "set")


def test_an_archive_name_too_long_for_a_file_system_is_called_so(tmp_path):
    import zipfile

    from stages.lib import archives

    archive = tmp_path / "set.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr(f"set/train/{'b' * 400}/a.jpg", b"x")
    (tmp_path / "out").mkdir()
    with pytest.raises(StageError, match=r"archive set.zip has a file or folder name of 400 "
                                         r"bytes, longer than the 255 a file system allows"):
        archives.extract(archive, tmp_path / "out", max_bytes=1 << 20)


def png_header(width, height):
    """A PNG that announces width x height pixels (no pixel data needed to be refused)."""
    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + \
            struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2,
                                                             0, 0, 0)) + chunk(b"IEND", b"")


def test_a_decompression_bomb_is_refused_naming_the_file(tmp_path):
    path = tmp_path / "bomb.png"
    path.write_bytes(png_header(60000, 60000))
    with pytest.raises(StageError, match=rf"^image {path} is too large to decode safely"):
        images.load_image(path)
