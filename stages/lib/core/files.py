"""Writing outputs: atomically (a kill or a full disk never leaves half a file), readable by
all, with one line when the disk is full; and reading JSON inputs with one line when they are
missing or broken."""
import contextlib
import csv
import errno
import glob
import io
import json
import os
import re
import shutil
import tempfile
import warnings
from pathlib import Path

import torch

from .common import StageError, alive


def write_json(path, data):
    """Write JSON atomically (temporary file in the same folder, then rename), readable by all
    (0644 less the umask, like any file the user writes). NaN and infinity are refused: they
    are not JSON, and a metric that is not finite is an error to report, not a value."""
    path = Path(path)
    try:
        text = json.dumps(data, indent=2, sort_keys=False, allow_nan=False) + "\n"
    except ValueError:
        raise StageError(f"{path}: a value is not a finite number (NaN or infinity): the "
                         "training probably diverged; try a lower learning rate") from None
    write_atomic(path, text.encode())


def write_csv(path, header, rows):
    """A CSV file (csv's dialect: comma, \\r\\n line ends, quoting where needed) written
    atomically, like write_json: a reader never sees half a table."""
    text = io.StringIO(newline="")
    writer = csv.writer(text)
    writer.writerow(header)
    writer.writerows(rows)
    write_atomic(path, text.getvalue().encode())


def write_atomic(path, payload):
    """Write bytes `payload` to `path` through a temporary file beside it and a rename, so a
    crash or a full disk never leaves a partial file; mode 0644 less the umask."""
    path = Path(path)
    try:
        with temporary_beside(path) as tmp:
            with open(tmp, "wb") as f:
                f.write(payload)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
    except OSError as error:
        if full := no_space(error, path):
            raise full from None
        raise


@contextlib.contextmanager
def temporary_beside(dest):
    """A new empty file next to `dest` (same file system: renaming it into place is atomic;
    mode 0644 less the umask), removed when the block ends unless it was renamed. Its name,
    `.<name>.<pid>.<random>.part`, lets remove_stale_parts tell a dead process's leftovers from
    a live one's work. Every file of the pipeline is written through here."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=_part_prefix(dest), suffix=".part", dir=dest.parent)
    tmp = Path(name)
    try:
        try:
            os.fchmod(fd, 0o666 & ~_umask())
        finally:
            os.close(fd)
        yield tmp
    finally:
        tmp.unlink(missing_ok=True)


def temporary_dir_beside(dest):
    """A new empty folder next to `dest`, named as temporary_beside names files, to build an
    output in before renaming it into place."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=_part_prefix(dest), suffix=".part", dir=dest.parent))


def _part_prefix(dest):
    return f".{Path(dest).name}.{os.getpid()}."


def remove_stale_parts(dest):
    """Remove the temporary files and folders that a killed run (SIGKILL, power loss) left
    beside `dest`; those of live processes stay. Returns the names removed."""
    dest = Path(dest)
    if not dest.parent.is_dir():
        return []
    removed = []
    for path in dest.parent.glob(f".{glob.escape(dest.name)}.*.part"):
        pid = path.name[len(dest.name) + 2:].split(".", 1)[0]
        if pid.isdigit() and (int(pid) == os.getpid() or alive(int(pid))):
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        removed.append(path.name)
    return removed


def human(n):
    """Bytes as a short human figure: 1.5 GiB, 12 MiB, 300 B."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def check_free_space(folder, needed, what):
    """Stop before writing `needed` bytes into `folder` when its file system has less free."""
    free = shutil.disk_usage(folder).free
    if needed > free:
        raise StageError(f"no space left on device for {what} (needed {human(needed)}, "
                         f"free {human(free)} in {folder})")


def no_space(error, what):
    """The one-line StageError for an OSError raised while writing `what`, or None when the
    error is not a full disk, a quota, or a file-size limit (`ulimit -f`, EFBIG)."""
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
        return StageError(f"no space left on device while writing {what}")
    if isinstance(error, OSError) and error.errno == errno.EFBIG:
        return StageError(f"file too large for this system's limit while writing {what} "
                          "(see `ulimit -f`)")
    return None


def load_torch(path, what, rerun, mmap=False):
    """The torch file at `path` (`what`: "a model file of this pipeline", ...) loaded onto the
    CPU with weights_only=True: tensors, numbers, strings and containers only, never code.
    Every pipeline file goes through here. A missing, damaged or refused file is one line
    naming it and `rerun`, the command that writes it again."""
    path = Path(path)
    if not path.is_file():   # not made yet: the stage runs without forcing
        raise StageError(f"{path} not found: run `{rerun.replace(' -f ', ' ')}` first")
    try:
        return torch_load(path, mmap)
    except Exception as error:   # torch.load raises many types for a damaged or hostile file
        raise StageError(f"{path} is not {what} ({load_error(error)}): run `{rerun}`") from None


def torch_load(path, mmap=False):
    """torch.load of a path or a binary file object onto the CPU with weights_only=True; its
    exceptions as they come (load_torch turns them into one line)."""
    with warnings.catch_warnings():   # the unpickler's protocol notice is noise here
        warnings.simplefilter("ignore")
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)


_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def load_error(error):
    """torch.load's complaint as a short line: the safe unpickler's own reason when it refused
    the file (without torch's advice to load it unsafely), else the first line of the
    message, else the error's type; escape sequences removed."""
    text = _ANSI.sub("", str(error))
    refused = re.search(r"WeightsUnpickler error:\s*(.+?)\s*(Check the documentation|$)", text,
                        re.S)
    if refused:   # its reason, without torch's advice (allowlisting, unsafe loading)
        reason = re.split(r"\.?\s+(?:Please|Check|To load|If you)\b", refused.group(1))[0]
        return "refused by the safe loader: " + " ".join(reason.split())[:160]
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[0][:160] if lines else type(error).__name__


def save_torch(obj, path):
    """torch.save `obj` to `path` atomically (a kill or a full disk leaves the previous file, or
    none), with one line when the disk is full."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    write_atomic(path, buffer.getbuffer())


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def staged_folder(path):
    """Write the folder `path` whole: yields an empty folder beside it (same file system,
    hidden: `.<name>.staging-<random>`, mode 0755 less the umask) and, when the block ends
    without error, puts it in the place of `path` (the old one renamed away, then removed). On
    an error `path` stays as it was and the staging folder is removed; one that a killed run
    left is removed by the next."""
    path = Path(path)
    for left in path.parent.glob(f".{path.name}.staging-*"):
        shutil.rmtree(left, ignore_errors=True)
    new = Path(tempfile.mkdtemp(prefix=f".{path.name}.staging-", dir=path.parent))
    try:
        os.chmod(new, 0o777 & ~_umask())
        yield new
        old = path.with_name(f".{path.name}.staging-old")
        if path.exists():
            os.replace(path, old)
        os.replace(new, path)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(new, ignore_errors=True)


def check_writable(*folders):
    """Stop before any work when an output folder cannot be created or written (rather than
    after hours of training, at the first save). Creates nothing: a folder that does not exist
    yet is checked through the nearest one above it that does."""
    for folder in map(Path, folders):
        probe_in = folder
        while not probe_in.exists() and probe_in != probe_in.parent:
            probe_in = probe_in.parent
        try:
            if not probe_in.is_dir():
                raise NotADirectoryError(errno.ENOTDIR, f"{probe_in} is not a folder")
            fd, probe = tempfile.mkstemp(prefix=".writable.", dir=probe_in)
            os.close(fd)
            os.unlink(probe)
        except OSError as error:
            raise StageError(f"cannot write to {folder}/: {error.strerror}") from None


def read_json(path):
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise StageError(f"{path} not found: run the stage that writes it first "
                         "(dvc repro)") from None
    except json.JSONDecodeError as error:
        raise StageError(f"{path} is not valid JSON: {error}") from None
