"""stages/lib/web.py: downloads verified, retried and bounded, against local HTTP servers (no
network), a well-behaved one and one with every fault a broken or hostile server can have."""
import hashlib
import http.server
import socket
import threading
import time

import pytest

from helpers import closed_port, leftovers
from stages.lib import web
from stages.lib.core.common import StageError

PAYLOAD = b"hello, dataset\n" * 1000
LIMIT = 1 << 30


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path == "/good.bin":
            self.send_response(200)
            self.send_header("Content-Length", str(len(PAYLOAD)))
            self.end_headers()
            self.wfile.write(PAYLOAD)
        elif self.path == "/truncated.bin":  # promises more than it sends, then hangs up
            self.send_response(200)
            self.send_header("Content-Length", str(len(PAYLOAD)))
            self.end_headers()
            self.wfile.write(PAYLOAD[:100])
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
        else:
            self.send_error(404)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def server():
    yield from served(Handler)


def served(handler):
    """An HTTP server on 127.0.0.1 answering with `handler`, in a thread, for as long as the
    generator is not closed: yields its base URL."""
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.daemon_threads = True   # a connection left hanging does not hold the shutdown
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def test_download_verifies_md5(server, tmp_path):
    dest = tmp_path / "good.bin"
    web.download([f"{server}/good.bin"], dest, checksum=hashlib.md5(PAYLOAD).hexdigest(),
                   algorithm="md5", retries=1, timeout=5)
    assert dest.read_bytes() == PAYLOAD
    assert leftovers(tmp_path) == ["good.bin"]


def test_download_sha256_prefix_as_torch_hub_names_files(server, tmp_path):
    dest = tmp_path / "w.pth"
    prefix = hashlib.sha256(PAYLOAD).hexdigest()[:8]
    web.download([f"{server}/good.bin"], dest, checksum=prefix, algorithm="sha256",
                   retries=1, timeout=5)
    assert dest.exists()


def test_download_checksum_mismatch_names_file_expected_actual(server, tmp_path):
    dest = tmp_path / "good.bin"
    with pytest.raises(StageError) as error:
        web.download([f"{server}/good.bin"], dest, checksum="0" * 32, algorithm="md5",
                       retries=3, timeout=5)
    message = str(error.value)
    assert "checksum mismatch" in message and "good.bin" in message
    assert "0" * 32 in message and hashlib.md5(PAYLOAD).hexdigest() in message
    assert leftovers(tmp_path) == []


def test_download_failing_midway_leaves_nothing(server, tmp_path):
    dest = tmp_path / "truncated.bin"
    with pytest.raises(StageError, match="could not download truncated.bin"):
        web.download([f"{server}/truncated.bin"], dest, checksum=None, algorithm="sha256",
                       retries=2, timeout=5, backoff=0.01)
    assert leftovers(tmp_path) == []


def test_download_tries_next_mirror(server, tmp_path):
    dest = tmp_path / "f.bin"
    used = web.download([f"{server}/missing.bin", f"{server}/good.bin"], dest,
                          checksum=hashlib.md5(PAYLOAD).hexdigest(), algorithm="md5",
                          retries=1, timeout=5)
    assert used.endswith("/good.bin") and dest.read_bytes() == PAYLOAD


def test_unreachable_upstream_says_how_to_use_mirror(tmp_path):
    url = f"http://127.0.0.1:{closed_port()}/data.zip"
    with pytest.raises(StageError) as error:
        web.download([url], tmp_path / "data.zip", checksum="x", algorithm="md5",
                       retries=2, timeout=2, backoff=0.01)
    message = str(error.value)
    assert "could not download data.zip" in message and "2 tries" in message
    assert "DATASETS_MIRROR" in message and "\n" not in message
    assert leftovers(tmp_path) == []


def test_no_checksum_warns_with_digest(server, tmp_path, capsys):
    web.download([f"{server}/good.bin"], tmp_path / "g.bin", checksum=None,
                   algorithm="sha256", retries=1, timeout=5)
    assert hashlib.sha256(PAYLOAD).hexdigest() in capsys.readouterr().out


# ------------------------------------------------------------------ extraction

# ---------------------------------------------------------------- a hostile or broken server

class Faults(http.server.BaseHTTPRequestHandler):
    """Each path a fault of the HTTP exchange, as a broken or hostile server makes them."""
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        raw = {"/bad-status": b"HTTP/1.1 banana\r\n\r\n",
               "/huge-header": b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * 70000 + b"\r\n\r\n",
               "/bad-length": b"HTTP/1.1 200 OK\r\nContent-Length: abc\r\n"
                              b"Connection: close\r\n\r\n" + PAYLOAD,
               "/chunked-cut": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                               b"400\r\n" + b"x" * 100}
        if self.path in raw:
            self.wfile.write(raw[self.path])
            self.wfile.flush()
            self.close_connection = True
        elif self.path.startswith("/loop"):
            self.send_response(302)
            self.send_header("Location", "/loop")
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif self.path == "/endless":   # no declared size, never ends
            self.send_response(200)
            self.send_header("Connection", "close")
            self.end_headers()
            try:
                for _ in range(10_000):   # bounded: 640 MiB at most, the client stops long before
                    self.wfile.write(b"z" * 65536)
            except OSError:
                pass
            self.close_connection = True
        elif self.path == "/drip":   # a byte every 0.3 s: never silent for a whole timeout
            self.send_response(200)
            self.send_header("Content-Length", "100")
            self.end_headers()
            try:
                for _ in range(100):
                    self.wfile.write(b"d")
                    self.wfile.flush()
                    time.sleep(0.3)
            except OSError:
                pass
        else:
            self.send_error(404)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def faulty():
    yield from served(Faults)


@pytest.mark.parametrize("path, reason", [
    ("/bad-status", "BadStatusLine"),
    ("/huge-header", "LineTooLong"),
    ("/bad-length", "bad Content-Length header 'abc'"),
    ("/chunked-cut", "IncompleteRead"),
    ("/loop", "too many redirects (HTTP 302)"),
])
def test_every_http_fault_is_retried_and_ends_in_one_line(faulty, tmp_path, capsys, path,
                                                          reason):
    with pytest.raises(StageError) as error:
        web.download([f"{faulty}{path}"], tmp_path / "f.bin", checksum=None,
                       algorithm="sha256", retries=2, timeout=5, backoff=0.01)
    message = str(error.value)
    assert message.startswith("could not download f.bin (") and "2 tries" in message
    assert reason in message and "\n" not in message, message
    assert "retry 1/1" in capsys.readouterr().out   # a network error: tried again
    assert leftovers(tmp_path) == []


def test_an_endless_body_stops_at_the_size_bound(faulty, tmp_path):
    with pytest.raises(StageError, match=r"^f\.bin: the download passed the 1\.0 MiB allowed "
                                         r"\(download\.max_unpacked_mb\)$"):
        web.download([f"{faulty}/endless"], tmp_path / "f.bin", checksum=None,
                       algorithm="sha256", retries=3, timeout=5, max_bytes=1 << 20)
    assert leftovers(tmp_path) == []


def test_a_declared_size_over_the_bound_is_refused_before_reading(server, tmp_path):
    with pytest.raises(StageError, match=r"announces 14\.6 KiB, more than the 1000 B allowed"):
        web.download([f"{server}/good.bin"], tmp_path / "f.bin", checksum=None,
                       algorithm="sha256", retries=3, timeout=5, max_bytes=1000)
    assert leftovers(tmp_path) == []


def test_a_drip_meets_the_deadline(faulty, tmp_path):
    """One byte every 0.3 s never trips a 3 s timeout; the file's deadline stops it."""
    with pytest.raises(StageError, match=r"^could not download f\.bin within download\.deadline "
                                         r"\(1\.5 s; last: TimeoutError: the download deadline "
                                         r"passed\)$"):
        web.download([f"{faulty}/drip"], tmp_path / "f.bin", checksum=None,
                       algorithm="sha256", retries=3, timeout=3, deadline=1.5)
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://example.org/x.zip", "x.zip"])
def test_only_http_urls_are_fetched(tmp_path, url):
    with pytest.raises(StageError, match=r"only http:// and https:// URLs are downloaded"):
        web.download([url], tmp_path / "f.bin", checksum=None, algorithm="sha256",
                       retries=1, timeout=5)
    assert leftovers(tmp_path) == []


def test_a_checksum_error_moves_on_to_the_next_source(server, tmp_path, capsys):
    """MNIST has several mirrors: a wrong file on the first is not the end."""
    good = hashlib.md5(PAYLOAD).hexdigest()
    used = web.download([f"{server}/truncated-never", f"{server}/good.bin"], tmp_path / "f",
                          checksum=good, algorithm="md5", retries=1, timeout=5)
    assert used.endswith("/good.bin")
    wrong = hashlib.md5(b"other").hexdigest()
    with pytest.raises(StageError, match="checksum mismatch"):
        web.download([f"{server}/good.bin", f"{server}/good.bin"], tmp_path / "g",
                       checksum=wrong, algorithm="md5", retries=1, timeout=5)
    assert "trying the next source" in capsys.readouterr().out
