"""stages/lib/archives.py: zip, tar and gzip files unpacked safely: no absolute path, `..`,
link or device file; the unpacked size bounded, and checked against the free space before
anything is written; a damaged archive one clear line."""
import gzip
import io
import os
import shutil
import tarfile
import zipfile

import pytest

from helpers import leftovers
from stages.lib import archives
from stages.lib.core.common import StageError

LIMIT = 1 << 30   # unpacked bytes allowed: not the point of these tests


def tar_with(path, add):
    with tarfile.open(path, "w:gz") as tar:
        add(tar)
    return path


def add_file(tar, name, data=b"x"):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def add_link(tar, name, target, kind=tarfile.SYMTYPE):
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    tar.addfile(info)


@pytest.mark.parametrize("build, what", [
    (lambda t: add_file(t, "../evil.txt"), "leaves the target folder"),
    (lambda t: add_file(t, "top/../../evil.txt"), "leaves the target folder"),
    (lambda t: add_file(t, "/tmp/evil.txt"), "absolute path"),
    (lambda t: add_link(t, "top/link", "/etc/passwd"), "link"),
    (lambda t: add_link(t, "top/inside", "top/a.txt"), "link"),
    (lambda t: add_link(t, "top/hard", "top/a.txt", tarfile.LNKTYPE), "link"),
])
def test_unsafe_tar_refused_before_writing(tmp_path, build, what):
    def add(tar):
        add_file(tar, "top/a.txt")
        build(tar)
    archive = tar_with(tmp_path / "bad.tar.gz", add)
    dest = tmp_path / "dest"
    dest.mkdir()
    with pytest.raises(StageError, match=f"unsafe archive bad.tar.gz: .*{what}"):
        archives.extract(archive, dest, max_bytes=LIMIT)
    assert leftovers(dest) == [] and not (tmp_path / "evil.txt").exists()


def zip_with(path, entries):
    with zipfile.ZipFile(path, "w") as zf:
        for info, data in entries:
            zf.writestr(info, data)
    return path


def symlink_entry(name, target):
    info = zipfile.ZipInfo(name)
    info.external_attr = (0o120777 << 16)
    return info, target


@pytest.mark.parametrize("entry, what", [
    (("../evil.txt", b"x"), "leaves the target folder"),
    (("/abs/evil.txt", b"x"), "absolute path"),
    (("C:/evil.txt", b"x"), "absolute path"),
    (symlink_entry("top/link", "/etc/passwd"), "link"),
])
def test_unsafe_zip_refused_before_writing(tmp_path, entry, what):
    archive = zip_with(tmp_path / "bad.zip", [("top/a.txt", b"x"), entry])
    dest = tmp_path / "dest"
    dest.mkdir()
    with pytest.raises(StageError, match=f"unsafe archive bad.zip: .*{what}"):
        archives.extract(archive, dest, max_bytes=LIMIT)
    assert leftovers(dest) == []


def test_safe_archives_extract(tmp_path):
    zipped = zip_with(tmp_path / "ok.zip", [("top/a/b.txt", b"zip")])
    tarred = tar_with(tmp_path / "ok.tar.gz", lambda t: add_file(t, "top/c.txt", b"tar"))
    for archive, rel, content in ((zipped, "top/a/b.txt", b"zip"), (tarred, "top/c.txt", b"tar")):
        dest = tmp_path / f"dest-{archive.name}"
        dest.mkdir()
        archives.extract(archive, dest, max_bytes=LIMIT)
        assert (dest / rel).read_bytes() == content
        assert archives.single_top_folder(dest) == dest / "top"


def test_tar_extraction_without_pep706_filters(tmp_path, monkeypatch):
    """Python patch releases before 3.11.4 (Debian 12 ships 3.11.2) have no extraction
    filters: the member checks alone keep unsafe archives out, and safe ones extract."""
    monkeypatch.delattr(tarfile, "data_filter", raising=False)
    monkeypatch.delattr(tarfile, "FilterError", raising=False)
    real_extractall = tarfile.TarFile.extractall

    def extractall_without_filter(self, path=".", members=None, *, numeric_owner=False, **kw):
        assert "filter" not in kw, "filter= passed to a tarfile that has none"
        return real_extractall(self, path, members, numeric_owner=numeric_owner)

    monkeypatch.setattr(tarfile.TarFile, "extractall", extractall_without_filter)
    good = tar_with(tmp_path / "ok.tar.gz", lambda t: add_file(t, "top/c.txt", b"tar"))
    (tmp_path / "good").mkdir()
    archives.extract(good, tmp_path / "good", max_bytes=LIMIT)
    assert (tmp_path / "good/top/c.txt").read_bytes() == b"tar"
    bad = tar_with(tmp_path / "bad.tar.gz", lambda t: add_link(t, "top/link", "/etc/passwd"))
    (tmp_path / "bad").mkdir()
    with pytest.raises(StageError, match="unsafe archive bad.tar.gz: link"):
        archives.extract(bad, tmp_path / "bad", max_bytes=LIMIT)
    assert leftovers(tmp_path / "bad") == []
    truncated = tar_with(tmp_path / "cut.tar.gz",
                         lambda t: add_file(t, "top/a.bin", os.urandom(200_000)))
    truncated.write_bytes(truncated.read_bytes()[:100_000])
    (tmp_path / "cut").mkdir()
    with pytest.raises(StageError, match="corrupt or truncated archive cut.tar.gz"):
        archives.extract(truncated, tmp_path / "cut", max_bytes=LIMIT)


@pytest.mark.parametrize("name", ["ok.zip", "ok.tar.gz"])
def test_truncated_archive_is_a_clear_error(tmp_path, name):
    big = os.urandom(200_000)
    if name.endswith(".zip"):
        archive = zip_with(tmp_path / name, [("top/a.bin", big)])
    else:
        archive = tar_with(tmp_path / name, lambda t: add_file(t, "top/a.bin", big))
    archive.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    dest = tmp_path / "dest"
    dest.mkdir()
    with pytest.raises(StageError,
                       match=f"(corrupt|truncated).*{name}|{name}.*(corrupt|truncated)"):
        archives.extract(archive, dest, max_bytes=LIMIT)


def test_not_an_archive(tmp_path):
    (tmp_path / "x.zip").write_bytes(b"not an archive at all")
    with pytest.raises(StageError, match="neither zip nor tar"):
        archives.extract(tmp_path / "x.zip", tmp_path, max_bytes=LIMIT)


# ---------------------------------------------------------------- bounded

def test_a_zip_that_unpacks_past_the_limit_is_refused_before_writing(tmp_path):
    archive = tmp_path / "bomb.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("top/a.bin", b"\0" * (3 << 20))   # 3 MiB of zeros: a few KiB packed
    assert archive.stat().st_size < 100_000
    dest = tmp_path / "out"
    dest.mkdir()
    with pytest.raises(StageError, match=r"archive bomb\.zip unpacks to 3\.0 MiB, more than "
                                         r"the limit of 1\.0 MiB \(params\.yaml: "
                                         r"download\.max_unpacked_mb\)"):
        archives.extract(archive, dest, max_bytes=1 << 20)
    assert list(dest.iterdir()) == []


def test_a_tar_that_unpacks_past_the_limit_is_refused_before_writing(tmp_path):
    archive = tmp_path / "bomb.tar.gz"
    with tarfile.open(archive, "w:gz") as tf:
        for i in range(3):
            info = tarfile.TarInfo(f"top/{i}.bin")
            info.size = 1 << 20
            tf.addfile(info, io.BytesIO(b"\0" * info.size))
    dest = tmp_path / "out"
    dest.mkdir()
    with pytest.raises(StageError, match=r"unpacks to 3\.0 MiB, more than the limit of 2\.0 MiB"):
        archives.extract(archive, dest, max_bytes=2 << 20)
    assert list(dest.iterdir()) == []


def test_a_gzip_bomb_stops_at_the_limit(tmp_path):
    path = tmp_path / "train-images-idx3-ubyte.gz"
    with gzip.open(path, "wb") as f:
        for _ in range(8):
            f.write(b"\0" * (1 << 20))
    with pytest.raises(StageError, match=r"train-images-idx3-ubyte\.gz unpacks to more than the "
                                         r"limit of 4\.0 MiB"):
        archives.gunzip(path, max_bytes=4 << 20)
    assert archives.gunzip(path, max_bytes=8 << 20) == b"\0" * (8 << 20)


def test_a_full_disk_is_named_with_needed_and_free(tmp_path, monkeypatch):
    archive = tmp_path / "a.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("top/a.bin", b"x" * 5000)
    dest = tmp_path / "out"
    dest.mkdir()
    monkeypatch.setattr(shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10, 9, 1000))
    with pytest.raises(StageError, match=r"^no space left on device for unpacking a\.zip "
                                         r"\(needed 4\.9 KiB, free 1000 B in "):
        archives.extract(archive, dest, max_bytes=1 << 30)
    assert list(dest.iterdir()) == []


def test_a_stray_file_beside_the_archive_folder_is_fine(tmp_path):
    (tmp_path / "hymenoptera_data" / "train").mkdir(parents=True)
    (tmp_path / "README.txt").write_text("hello")
    assert archives.single_top_folder(tmp_path) == tmp_path / "hymenoptera_data"
