"""Unpacking what was downloaded, safely: zip and tar archives (no absolute paths, `..`,
links or device files; the unpacked size bounded and checked against the free disk space
before anything is written) and gzip files (bounded too)."""
import gzip
import stat
import tarfile
import time
import zipfile
from pathlib import Path, PurePosixPath

from .core.common import StageError
from .core.files import check_free_space, human, no_space

MAX_NAME_BYTES = 255
CHUNK = 1 << 20   # bytes a gzip file is unpacked by


def _check_member_name(archive, name):
    path = PurePosixPath(name.replace("\\", "/"))
    if path.is_absolute() or name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        raise StageError(f"unsafe archive {archive}: absolute path {name!r}")
    if ".." in path.parts:
        raise StageError(f"unsafe archive {archive}: path {name!r} leaves the target folder")
    for part in path.parts:   # file systems refuse longer names (ext4, APFS, NTFS: 255)
        if len(part.encode()) > MAX_NAME_BYTES:
            raise StageError(f"archive {archive} has a file or folder name of "
                             f"{len(part.encode())} bytes, longer than the {MAX_NAME_BYTES} a "
                             f"file system allows: {part[:40]!r}... in {name[:80]!r}")


def _check_unpacked_size(archive, dest, total, max_bytes):
    """The archive's members add up to `total` bytes: refuse more than `max_bytes` (a bomb, or a
    dataset bigger than the limit allows) and more than the free space at `dest`."""
    if total > max_bytes:
        raise StageError(f"archive {archive} unpacks to {human(total)}, more than the limit of "
                         f"{human(max_bytes)} (params.yaml: download.max_unpacked_mb)")
    check_free_space(dest, total, f"unpacking {archive}")


def extract(archive, dest, *, max_bytes):
    """Extract a .zip or .tar[.gz|.bz2|.xz] into the existing folder `dest`, refusing absolute
    paths, '..', links and device files, and archives that unpack to more than `max_bytes` or
    than the free disk space (every member is checked before anything is written). A zip
    member's declared size bounds what is written for it (zipfile stops there), a tar member's
    size is what it holds."""
    archive = Path(archive)
    start = time.monotonic()
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as zf:
                infos = zf.infolist()
                for info in infos:
                    _check_member_name(archive.name, info.filename)
                    if stat.S_ISLNK(info.external_attr >> 16):
                        raise StageError(f"unsafe archive {archive.name}: link {info.filename!r}")
                total = sum(i.file_size for i in infos)
                _check_unpacked_size(archive.name, dest, total, max_bytes)
                _extracting(archive, dest, len(infos), total)
                bad = zf.testzip()
                if bad is not None:
                    raise StageError(f"corrupt archive {archive.name}: bad CRC for {bad}")
                zf.extractall(dest)
                _extracted(archive, total, start)
        elif tarfile.is_tarfile(archive):
            with tarfile.open(archive) as tf:
                members, total = [], 0
                for member in tf:   # reads headers only; stops as soon as the limit is passed
                    _check_member_name(archive.name, member.name)
                    if member.issym() or member.islnk():
                        raise StageError(f"unsafe archive {archive.name}: link {member.name!r}")
                    if not (member.isfile() or member.isdir()):
                        raise StageError(f"unsafe archive {archive.name}: special file "
                                         f"{member.name!r}")
                    members.append(member)
                    total += member.size
                    if total > max_bytes:
                        _check_unpacked_size(archive.name, dest, total, max_bytes)
                _check_unpacked_size(archive.name, dest, total, max_bytes)
                _extracting(archive, dest, len(members), total)
                if hasattr(tarfile, "data_filter"):   # Python >= 3.11.4 / 3.12 (PEP 706)
                    tf.extractall(dest, members=members, filter="data")
                else:   # older patch releases (Debian 12's 3.11.2): the checks above suffice
                    tf.extractall(dest, members=members)
                _extracted(archive, total, start)
        else:
            raise StageError(f"corrupt or unknown archive {archive.name}: neither zip nor tar")
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError) as error:
        if full := no_space(error, f"{archive.name} unpacked into {dest}"):
            raise full from None
        if isinstance(error, getattr(tarfile, "FilterError", ())):
            raise StageError(f"unsafe archive {archive.name}: {error}") from None
        raise StageError(f"corrupt or truncated archive {archive.name}: {error}") from None


def _extracting(archive, dest, members, total):
    print(f"extracting {archive.name} ({human(archive.stat().st_size)}): {members} entries, "
          f"{human(total)} into {dest}", flush=True)


def _extracted(archive, total, start):
    print(f"extracted {archive.name}: {human(total)} in {time.monotonic() - start:.1f} s",
          flush=True)


def gunzip(path, *, max_bytes):
    """The decompressed content of a .gz file, read in chunks and refused past `max_bytes`
    (a gzip bomb stops at the limit instead of filling the memory)."""
    path = Path(path)
    out = bytearray()
    try:
        with gzip.open(path, "rb") as f:
            while chunk := f.read(CHUNK):
                out += chunk
                if len(out) > max_bytes:
                    raise StageError(f"{path.name} unpacks to more than the limit of "
                                     f"{human(max_bytes)} (params.yaml: download.max_unpacked_mb)")
    except (OSError, EOFError, gzip.BadGzipFile) as error:
        raise StageError(f"corrupt or truncated archive {path.name}: {error}") from None
    return bytes(out)


def single_top_folder(folder):
    """The one folder inside `folder` when an archive wraps its content in a top folder
    (hymenoptera_data/, cifar-10-batches-py/), else `folder` itself. Stray files beside that
    folder (a README, macOS's __MACOSX/ and .DS_Store) do not count."""
    folder = Path(folder)
    if (folder / "train").is_dir():
        return folder
    dirs = [p for p in folder.iterdir() if p.is_dir() and not p.is_symlink()
            and p.name != "__MACOSX"]
    return dirs[0] if len(dirs) == 1 else folder
