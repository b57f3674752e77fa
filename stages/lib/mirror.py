"""The offline mirror (DATASETS_MIRROR): a folder of the sources' files, each listed with its
SHA-256 in the folder's SHA256SUMS, copied into place verified and atomically."""
import os
import shutil
from pathlib import Path

from .checksums import verify
from .core.common import StageError
from .core.files import check_free_space, no_space, temporary_beside

MIRROR_ENV = "DATASETS_MIRROR"


def mirror_dir():
    value = os.environ.get(MIRROR_ENV)
    if not value:
        return None
    path = Path(value).expanduser()
    if not path.is_dir():
        raise StageError(f"{MIRROR_ENV}={value} is not a folder")
    return path


def read_sha256sums(mirror):
    """{relative path: sha256} from the mirror's SHA256SUMS (the `sha256sum` output format)."""
    sums_file = mirror / "SHA256SUMS"
    if not sums_file.is_file():
        raise StageError(f"mirror {mirror} has no SHA256SUMS file; every mirrored file must be "
                         "listed there with its SHA-256")
    sums = {}
    for number, line in enumerate(sums_file.read_text().splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        parts = line.split(maxsplit=1)
        if len(parts) != 2 or len(parts[0]) != 64:
            raise StageError(f"{sums_file}:{number}: expected '<sha256>  <path>', got {line!r}")
        sums[parts[1].lstrip("*").strip().removeprefix("./")] = parts[0].lower()
    return sums


def copy_from_mirror(mirror, relpath, dest, upstream=None):
    """Copy mirror/relpath to dest, verified against the mirror's SHA256SUMS. `upstream` (a URL)
    only serves the error message, to say where the missing file can be had."""
    sums = read_sha256sums(mirror)
    source = mirror / relpath
    where = f" (upstream: {upstream})" if upstream else ""
    if not source.is_file():
        raise StageError(f"mirror {mirror} is missing {relpath}{where}; put that file there and "
                         f"list it in SHA256SUMS, or unset {MIRROR_ENV} to download it")
    if relpath not in sums:
        raise StageError(f"mirror {mirror} does not list {relpath} in SHA256SUMS; add its "
                         f"SHA-256 there, or unset {MIRROR_ENV} to download it{where}")
    with temporary_beside(dest) as tmp:
        check_free_space(tmp.parent, source.stat().st_size, relpath)
        try:
            shutil.copyfile(source, tmp)
        except OSError as error:
            if full := no_space(error, f"{relpath} to {tmp.parent}"):
                raise full from None
            raise
        verify(tmp, sums[relpath], "sha256", name=f"{relpath} (mirror {mirror})")
        os.replace(tmp, dest)
