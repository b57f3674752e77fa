"""Getting files: upstream over HTTP (retries, backoff, progress bar) or from an offline mirror
(`DATASETS_MIRROR`), always verified, always atomic; and safe archive extraction.

Every function writes only to the path its caller names, and only through a temporary name
that is renamed into place once the content is verified."""
import hashlib
import http.client
import os
import shutil
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from tqdm import tqdm

from .core.common import StageError, alive
from .core.files import no_space
from .core.progress import progress_interval

MIRROR_ENV = "DATASETS_MIRROR"
# Names of download@<name> sources whose files may differ from the checksum their upstream
# publishes (a rebuilt mirror, the tests' random weights): comma-separated, off by default.
UNVERIFIED_ENV = "DATASETS_ACCEPT_UNVERIFIED"
CHUNK = 1 << 20


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
        raise StageError(f"checksum mismatch for {name or Path(path).name}: expected {algorithm} "
                         f"{expected}, got {actual}")
    return actual


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
    with _temporary_beside(dest) as tmp:
        check_free_space(tmp.parent, source.stat().st_size, relpath)
        try:
            shutil.copyfile(source, tmp)
        except OSError as error:
            if full := no_space(error, f"{relpath} to {tmp.parent}"):
                raise full from None
            raise
        verify(tmp, sums[relpath], "sha256", name=f"{relpath} (mirror {mirror})")
        os.replace(tmp, dest)


SCHEMES = ("http", "https")
# What a broken or hostile server can make urllib raise mid-transfer: retried as network errors
NETWORK_ERRORS = (urllib.error.URLError, http.client.HTTPException, OSError, EOFError,
                  ValueError)


class _TooLarge(Exception):
    """The body passed the size bound: no retry (it would pass it again)."""


def download(urls, dest, *, checksum, algorithm, retries, timeout, backoff=1.0,
             max_bytes=None, deadline=None):
    """Download the first URL of `urls` that works to `dest`, verified.

    Only http and https URLs are fetched. Each URL gets `retries` tries with exponential
    backoff; any fault of the connection or of the HTTP exchange (refused, reset, truncated
    body, malformed status line or headers, a redirect loop) is retried and the last one named.
    A body is cut off as soon as it passes its declared size or `max_bytes`, and the whole file
    (every URL and try) has `deadline` seconds. A file whose checksum does not match moves on
    to the next URL. `checksum=None` means the publisher gives none: the file is kept, and its
    SHA-256 is printed so it can be pinned. Nothing partial is left on any failure."""
    for url in urls:
        scheme = urllib.parse.urlsplit(url).scheme.lower()
        if scheme not in SCHEMES:
            raise StageError(f"{url}: only http:// and https:// URLs are downloaded")
    errors, mismatch = [], None
    stop = None if deadline is None else time.monotonic() + deadline
    for number, url in enumerate(urls, 1):
        for attempt in range(1, retries + 1):
            try:
                with _temporary_beside(dest) as tmp:
                    _http_get(url, tmp, timeout, max_bytes, stop)
                    if checksum is None:
                        print(f"warning: {url} has no published checksum; got sha256 "
                              f"{digest(tmp)} (pin it in params.yaml to verify future downloads)",
                              flush=True)
                    else:
                        verify(tmp, checksum, algorithm, name=url)
                    os.replace(tmp, dest)
                return url
            except StageError as error:   # a checksum mismatch: the next URL may be right
                mismatch = error
                if number < len(urls):
                    print(f"{error}; trying the next source", flush=True)
                break
            except _TooLarge as error:
                raise StageError(f"{Path(dest).name}: {error}") from None
            except NETWORK_ERRORS as error:
                if full := no_space(error, f"{Path(dest).name} to {Path(dest).parent}"):
                    raise full from None
                reason = _reason(error)
                errors.append(f"{url}: {reason}")
                if stop is not None and time.monotonic() >= stop:
                    raise StageError(f"could not download {Path(dest).name} within "
                                     f"download.deadline ({deadline:g} s; last: {reason})"
                                     ) from None
                if attempt < retries:
                    wait = backoff * 2 ** (attempt - 1)
                    print(f"download failed ({reason}); retry {attempt}/{retries - 1} in "
                          f"{wait:g} s", flush=True)
                    time.sleep(wait)
    if mismatch is not None and not errors:
        raise mismatch
    raise StageError(f"could not download {Path(dest).name} ({errors[-1]}; {len(errors)} tries); "
                     f"no network? set {MIRROR_ENV}=DIR to use an offline mirror (see README)")


def _reason(error):
    """One readable line for a failed try: HTTP errors by status, redirect loops by name,
    others by their message (first line), or their type when they have none."""
    if isinstance(error, urllib.error.HTTPError):
        if 300 <= error.code < 400:
            return f"too many redirects (HTTP {error.code})"
        return f"HTTP {error.code} {str(error.reason).splitlines()[0] if error.reason else ''}"\
            .strip()
    reason = getattr(error, "reason", None) or error
    text = " ".join(str(reason).split())[:200]
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def _http_get(url, path, timeout, max_bytes=None, stop=None):
    request = urllib.request.Request(url, headers={"User-Agent": "cnn-practical-dvc"})
    with urllib.request.urlopen(request, timeout=timeout) as response, open(path, "wb") as out:
        declared = response.headers.get("Content-Length")
        if declared is not None and not declared.strip().isdigit():
            raise ValueError(f"bad Content-Length header {declared[:40]!r}")
        total = int(declared) if declared else None
        # http.client reads a declared body to its length and no further: only a body of no
        # declared size needs the bound while it comes
        bound = max_bytes if total is None else None
        if max_bytes is not None and total is not None and total > max_bytes:
            raise _TooLarge(f"the server announces {human(total)}, more than the "
                            f"{human(max_bytes)} allowed (download.max_unpacked_mb)")
        print(f"downloading {url}" + (f" ({human(total)})" if total else ""), flush=True)
        # a bar on a terminal; in a log a line every PROGRESS_INTERVAL seconds (default 30,
        # "off": none), as progress.Progress does for training and inference
        interval = progress_interval()
        start = shown = time.monotonic()
        with tqdm(total=total, unit="B", unit_scale=True, desc=Path(url).name,
                  disable=None if interval is not None else True) as bar:
            # read1: what one receive brings, so that a slow drip meets the deadline check
            while chunk := response.read1(CHUNK if bound is None
                                          else min(CHUNK, bound + 1 - out.tell())):
                out.write(chunk)
                bar.update(len(chunk))
                now = time.monotonic()
                if bound is not None and out.tell() > bound:
                    raise _TooLarge(f"the download passed the {human(max_bytes)} allowed "
                                    "(download.max_unpacked_mb)")
                if stop is not None and now >= stop:
                    raise TimeoutError("the download deadline passed")
                if bar.disable and interval is not None and now - shown >= interval:
                    shown = now
                    done, of = out.tell(), f" of {human(total)}" if total else ""
                    print(f"  {Path(url).name}: {human(done)}{of}, "
                          f"{human(done / max(now - start, 1e-9))}/s", flush=True)
        if total is not None and out.tell() != total:
            raise EOFError(f"connection closed after {out.tell()} of {total} bytes")


class _temporary_beside:
    """A temporary path next to `dest` (same file system, so rename is atomic), removed on exit
    unless it was renamed into place."""

    def __init__(self, dest):
        self.dest = Path(dest)

    def __enter__(self):
        self.dest.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=_part_prefix(self.dest), suffix=".part",
                                    dir=self.dest.parent)
        os.close(fd)
        self.path = Path(name)
        return self.path

    def __exit__(self, *exc):
        self.path.unlink(missing_ok=True)
        return False


def _part_prefix(dest):
    """Temporary names beside `dest` carry the writing process's id (.<name>.<pid>.), so a later
    run can tell the leftovers of a dead process from the work of a live one."""
    return f".{Path(dest).name}.{os.getpid()}."


def temporary_dir_beside(dest):
    """A new empty folder next to `dest`, to build an output in before renaming it into place."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=_part_prefix(dest), suffix=".part", dir=dest.parent))


def remove_stale_parts(dest):
    """Remove the temporary files and folders that a killed run (SIGKILL, power loss) left
    beside `dest`; those of live processes stay. Returns the names removed."""
    dest = Path(dest)
    if not dest.parent.is_dir():
        return []
    removed = []
    for path in dest.parent.glob(f".{glob_escape(dest.name)}.*.part"):
        pid = path.name[len(dest.name) + 2:].split(".", 1)[0]
        if pid.isdigit() and (int(pid) == os.getpid() or alive(int(pid))):
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        removed.append(path.name)
    return removed


def glob_escape(text):
    return "".join(f"[{c}]" if c in "*?[" else c for c in text)
