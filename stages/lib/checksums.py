"""Is a file the one its publisher made? Its digest, the check against the published one, and
the policy for a copy that differs: refused, unless the user names its source in
DATASETS_ACCEPT_UNVERIFIED (a rebuilt mirror, the tests' random weights)."""
import hashlib
import os
import sys
from pathlib import Path

from .core.common import StageError

# Names of download@<name> sources whose files may differ from the checksum their upstream
# publishes: comma-separated, off by default.
UNVERIFIED_ENV = "DATASETS_ACCEPT_UNVERIFIED"


class ChecksumMismatch(StageError):
    """A file's digest is not the one expected: another source may have the right file."""


def accepts_unverified(name):
    """True when UNVERIFIED_ENV names `name` (or says `all`)."""
    names = {n.strip() for n in os.environ.get(UNVERIFIED_ENV, "").split(",") if n.strip()}
    return name in names or "all" in names


def upstream_mismatch(name, what, detail):
    """A file is not the upstream one: a StageError, unless UNVERIFIED_ENV accepts `name`, in
    which case a loud warning on stderr (the run goes on with data that is not upstream's) and
    the same words returned, for the record of where the data came from."""
    if not accepts_unverified(name):
        raise StageError(f"{what} ({detail}); if you trust this copy anyway, set "
                         f"{UNVERIFIED_ENV}={name}")
    print(f"WARNING: UNVERIFIED DATA: {what} ({detail}); accepted because "
          f"{UNVERIFIED_ENV}={os.environ[UNVERIFIED_ENV]}", file=sys.stderr, flush=True)
    return f"{what} ({detail})"


def digest(path, algorithm="sha256"):
    with open(path, "rb") as f:
        return hashlib.file_digest(f, algorithm).hexdigest()


def verify(path, expected, algorithm="sha256", name=None):
    """Check the file's digest; `expected` may be a prefix (torch.hub puts the first 8 hex
    digits of the SHA-256 in weight file names)."""
    actual = digest(path, algorithm)
    if not expected or not actual.startswith(expected.lower()):
        raise ChecksumMismatch(f"checksum mismatch for {name or Path(path).name}: expected "
                               f"{algorithm} {expected}, got {actual}")
    return actual
