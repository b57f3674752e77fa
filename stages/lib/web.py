"""Downloading over HTTP: retries with backoff, a size bound and a deadline, a progress bar or
log lines, the file verified and renamed into place only once whole."""
import http.client
import os
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from tqdm import tqdm

from .checksums import ChecksumMismatch, digest, verify
from .core.common import StageError
from .core.files import human, no_space, temporary_beside
from .core.progress import progress_interval
from .mirror import MIRROR_ENV

CHUNK = 1 << 20   # bytes read at a time


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
                with temporary_beside(dest) as tmp:
                    _http_get(url, tmp, timeout, max_bytes, stop)
                    if checksum is None:
                        print(f"warning: {url} has no published checksum; got sha256 "
                              f"{digest(tmp)} (pin it in params.yaml to verify future downloads)",
                              flush=True)
                    else:
                        verify(tmp, checksum, algorithm, name=url)
                    os.replace(tmp, dest)
                return url
            except ChecksumMismatch as error:   # the next URL may have the right file
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
