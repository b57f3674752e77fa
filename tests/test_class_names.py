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


def test_figures_write_a_name_no_font_draws_as_code_points(monkeypatch, capsys):
    """A class name in a script no installed font has (CJK here, where none is installed)
    would be drawn as empty boxes: figures write its characters as code points, say so once,
    and keep every name a font can draw as it is."""
    import io
    import warnings

    from stages.lib import plots, png

    monkeypatch.setattr(png, "_drawable", lambda: frozenset(range(0x250)))   # Latin only
    monkeypatch.setattr(png, "_SAID", set())
    fig = plots.confusion_figure(__import__("numpy").eye(3, dtype=int), ["名前", "café", "ants"],
                                 "t")
    labels = [t.get_text() for t in fig.axes[0].get_xticklabels()]
    assert labels == ["<U+540D><U+524D>", "café", "ants"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fig.savefig(io.BytesIO(), format="png")
    assert not [w for w in caught if "missing from" in str(w.message)]
    png.names(["名前"])   # a second figure: not said again
    said = capsys.readouterr().out.strip().splitlines()
    assert said == ["figures: no installed font draws the class names 名前: written as code "
                    "points (<U+...>); a font with their script (e.g. fonts-noto-cjk) draws them"]
    monkeypatch.setattr(png, "_drawable", lambda: frozenset(map(ord, "名前")))
    assert png.names(["名前"]) == ["名前"]
