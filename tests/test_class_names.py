"""Class names reach the report's HTML and Markdown, `dvc plots` pages (inside a <script>
block) and CSV files opened in spreadsheets: at download, a name with markup, quotes, a
backslash or control characters, or one that starts like a formula, is refused in one line
naming it, by every route a name comes in (an ImageFolder zip or tar, CIFAR-10's meta)."""
import io
import tarfile
import zipfile

import pytest
from PIL import Image

from helpers import cifar_folder
from stages.lib import archives, images
from stages.lib.core import data, names
from stages.lib.core.common import StageError

HOSTILE = ["<img src=x onerror=alert(1)>", "ants\n# injected heading", "=HYPERLINK(1)",
           "+1", "-x", "@SUM(A1)", "back\\slash", 'say "hi"', "tab\there", "ampersand&"]
RULE = r"class names must not contain < > & quotes, a backslash or control characters"


def jpeg():
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, format="JPEG")
    return buffer.getvalue()


def members(bad):
    return [f"set/{split}/{name}/{i}.jpg" for split in ("train", "val")
            for name in ("ants", bad) for i in range(2)]


def write_zip(path, bad):
    with zipfile.ZipFile(path, "w") as zf:
        for name in members(bad):
            zf.writestr(name, jpeg())


def write_tar(path, bad):
    with tarfile.open(path, "w:gz") as tf:
        for name in members(bad):
            payload = jpeg()
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            tf.addfile(info, io.BytesIO(payload))


@pytest.mark.parametrize("write, suffix", [(write_zip, ".zip"), (write_tar, ".tar.gz")])
@pytest.mark.parametrize("bad", HOSTILE)
def test_an_image_folder_archive_with_a_hostile_class_is_refused(tmp_path, write, suffix, bad):
    archive = tmp_path / f"set{suffix}"
    write(archive, bad)
    unpacked = tmp_path / "unpacked"
    unpacked.mkdir()
    archives.extract(archive, unpacked, max_bytes=1 << 30)
    with pytest.raises(StageError, match=RULE) as error:
        images.image_folder_classes(archives.single_top_folder(unpacked), label="set.zip")
    assert repr(bad) in str(error.value)


@pytest.mark.parametrize("bad", HOSTILE + ["</script><script>alert(1)</script>"])
def test_a_cifar_meta_with_a_hostile_class_is_refused(tmp_path, bad):
    folder = cifar_folder(tmp_path, {b"label_names": [b"cat", bad.encode()]})
    with pytest.raises(StageError, match=rf"^CIFAR-10 file batches\.meta has a class named .*"
                                         rf"{RULE}"):
        data.read_cifar10(folder)


@pytest.mark.parametrize("name", ["ants", "bees", "gato", "pájaro", "0", "sea lion",
                                  "t-shirt", "5 o_clock"])
def test_ordinary_names_pass(name):
    names.check_class_name(name, "set")
