"""stages/lib/mirror.py: a file copied from DATASETS_MIRROR only when the mirror's SHA256SUMS
lists it and its digest agrees; each way it can be wrong one line, nothing left behind."""
import hashlib
import shutil

import pytest

from helpers import leftovers
from stages.lib.core.common import StageError
from stages.lib.mirror import copy_from_mirror, mirror_dir

PAYLOAD = b"hello, dataset\n" * 1000


def make_mirror(root, files):
    for rel, content in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(content)
    sums = "".join(f"{hashlib.sha256(c).hexdigest()}  {rel}\n" for rel, c in files.items())
    (root / "SHA256SUMS").write_text(sums)
    return root


def test_mirror_copy_verified(tmp_path):
    mirror = make_mirror(tmp_path / "m", {"ds/a.bin": PAYLOAD})
    dest = tmp_path / "out" / "a.bin"
    copy_from_mirror(mirror, "ds/a.bin", dest)
    assert dest.read_bytes() == PAYLOAD
    assert leftovers(dest.parent) == ["a.bin"]


def test_mirror_missing_file_named(tmp_path):
    mirror = make_mirror(tmp_path / "m", {"ds/a.bin": PAYLOAD})
    (mirror / "ds/a.bin").unlink()
    with pytest.raises(StageError, match=r"missing ds/a.bin \(upstream: http://x/a.bin\)"):
        copy_from_mirror(mirror, "ds/a.bin", tmp_path / "a.bin", upstream="http://x/a.bin")


def test_mirror_unlisted_file_refused(tmp_path):
    mirror = make_mirror(tmp_path / "m", {"ds/a.bin": PAYLOAD})
    (mirror / "ds/b.bin").write_bytes(b"unlisted")
    with pytest.raises(StageError, match="does not list ds/b.bin in SHA256SUMS"):
        copy_from_mirror(mirror, "ds/b.bin", tmp_path / "b.bin")
    assert not (tmp_path / "b.bin").exists()


def test_mirror_checksum_mismatch_leaves_nothing(tmp_path):
    mirror = make_mirror(tmp_path / "m", {"ds/a.bin": PAYLOAD})
    (mirror / "ds/a.bin").write_bytes(PAYLOAD + b"tampered")
    out = tmp_path / "out"
    with pytest.raises(StageError) as error:
        copy_from_mirror(mirror, "ds/a.bin", out / "a.bin")
    message = str(error.value)
    assert "checksum mismatch for ds/a.bin" in message
    assert hashlib.sha256(PAYLOAD).hexdigest() in message
    assert hashlib.sha256(PAYLOAD + b"tampered").hexdigest() in message
    assert leftovers(out) == []


def test_mirror_without_sha256sums(tmp_path):
    (tmp_path / "m").mkdir()
    with pytest.raises(StageError, match="no SHA256SUMS"):
        copy_from_mirror(tmp_path / "m", "ds/a.bin", tmp_path / "a.bin")


def test_mirror_env_must_be_a_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("DATASETS_MIRROR", str(tmp_path / "nope"))
    with pytest.raises(StageError, match="is not a folder"):
        mirror_dir()


def test_a_full_disk_while_copying_from_the_mirror(tmp_path, monkeypatch, mirror):
    monkeypatch.setattr(shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10, 9, 10))
    with pytest.raises(StageError, match=r"no space left on device for mnist/t10k-labels"):
        copy_from_mirror(mirror, "mnist/t10k-labels-idx1-ubyte.gz", tmp_path / "x.gz")
    assert list(tmp_path.iterdir()) == []
