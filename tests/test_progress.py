"""Progress while a long step runs (issue 17, point 6): a tqdm bar per pass on a terminal, flushed
lines every PROGRESS_INTERVAL seconds in a log, nothing when disabled; never a change in what
training computes. Downloads, extraction and t-SNE say what they do as they do it."""
import hashlib
import http.server
import io
import sys
import tarfile
import threading

import numpy as np
import pytest
import torch

from helpers import Tiny, tiny_dataset
from stages.lib import analysis, archives, web
from stages.lib.core import data, engine, inference, progress
from stages.lib.core.common import StageError
from stages.lib.core.runtime import seed_everything

CPU = torch.device("cpu")
NORM = dict(mean=(0.5,), std=(0.25,))


class Terminal(io.StringIO):
    """A stream that says it is a terminal: tqdm's disable=None then shows its bar."""

    def isatty(self):
        return True


def train(epochs=2):
    """engine.fit on a tiny model (16 samples a batch: 4 train, 2 val batches an epoch); the
    final state dict."""
    seed_everything(0)
    x, y = tiny_dataset(64)
    model = inference.prepare(Tiny(), CPU)
    optimizer = engine.make_optimizer("adam", model.parameters(), 0.01)
    generator = torch.Generator().manual_seed(0)
    _, last = engine.fit(
        model, train_batches=lambda e: data.batches(x, y, 16, generator=generator, **NORM),
        val_batches=lambda: data.batches(x, y, 32, **NORM), epochs=epochs, optimizer=optimizer,
        device=CPU, amp_dtype=None)
    return last


def on_a_terminal(monkeypatch):
    """stderr (where tqdm draws) is a terminal from now on; set in the test itself, as pytest's
    capture puts its own stream back between a fixture and the test."""
    stream = Terminal()
    monkeypatch.setattr(sys, "stderr", stream)
    return stream


def test_log_gets_a_flushed_line_per_interval_with_rate_and_eta(monkeypatch, capsys):
    monkeypatch.setenv(progress.PROGRESS_ENV, "0")   # a line after every batch
    train(epochs=2)
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert err == ""   # no bar: the output is not a terminal
    # epoch 1 of a generator: the number of batches is not known yet
    assert "  epoch 1/2 train: batch 1, " in out and "elapsed" in lines[0]
    # from epoch 2 on, the count of the epoch before: batch i/n and the time left
    assert any(line.startswith("  epoch 2/2 train: batch 4/4, ") and " left" in line
               for line in lines), out
    assert any(line.startswith("  epoch 2/2 val: batch 2/2, ") for line in lines), out
    assert all(" batch/s" in line and ", loss " in line for line in lines), out
    # the per-epoch summary (live.py) stays the only kind of line that starts with "epoch"
    assert not any(line.startswith("epoch") for line in lines)


def test_lines_wait_for_the_interval(monkeypatch, capsys):
    monkeypatch.delenv(progress.PROGRESS_ENV, raising=False)   # 30 s: a tiny run prints nothing
    train(epochs=1)
    assert capsys.readouterr() == ("", "")


def test_progress_never_changes_the_weights(monkeypatch):
    terminal = on_a_terminal(monkeypatch)
    monkeypatch.setenv(progress.PROGRESS_ENV, "off")
    silent = train()
    monkeypatch.setenv(progress.PROGRESS_ENV, "0")
    monkeypatch.setattr(sys, "stderr", io.StringIO())     # a log: lines
    logged = train()
    monkeypatch.setattr(sys, "stderr", terminal)          # a terminal: a bar reading the loss
    monkeypatch.setattr(progress, "BAR_LOSS_INTERVAL", 0.0)
    shown = train()
    assert "loss " in terminal.getvalue()
    for key in silent:
        assert torch.equal(silent[key], logged[key]) and torch.equal(silent[key], shown[key]), key


def test_terminal_gets_a_bar_per_pass_and_no_lines(monkeypatch, capsys):
    terminal = on_a_terminal(monkeypatch)
    monkeypatch.setenv(progress.PROGRESS_ENV, "0")
    train(epochs=2)
    bar = terminal.getvalue()
    assert "epoch 1/2 train" in bar and "epoch 2/2 val" in bar and "batch/s" in bar
    assert "| 0/4 " in bar   # epoch 2 knows its number of batches: a bar with a total
    assert capsys.readouterr().out == ""


def test_run_epoch_takes_the_total_from_len_and_draws_on_the_given_file():
    x, y = tiny_dataset(64)
    batches = list(data.batches(x, y, 16, **NORM))   # has len(), as a DataLoader does
    model = inference.prepare(Tiny(), CPU)
    stream = io.StringIO()
    engine.run_epoch(model, batches, CPU, None,
                     progress=progress.Progress("check", file=stream, disable=False))
    assert "check:   0%|          | 0/4 " in stream.getvalue()
    stream = io.StringIO()   # not a terminal: lines, into the same file
    engine.run_epoch(model, batches, CPU, None,
                     progress=progress.Progress("check", file=stream, interval=0))
    lines = stream.getvalue().splitlines()
    assert [line.split(",")[0] for line in lines] == [f"  check: batch {i}/4" for i in (1, 2, 3, 4)]


def test_disabled_shows_nothing(monkeypatch, capsys):
    terminal = on_a_terminal(monkeypatch)
    x, y = tiny_dataset(64)
    model = inference.prepare(Tiny(), CPU)
    monkeypatch.setenv(progress.PROGRESS_ENV, "0")
    engine.run_epoch(model, data.batches(x, y, 16, **NORM), CPU, None)   # progress=None
    engine.run_epoch(model, data.batches(x, y, 16, **NORM), CPU, None,
                     progress=progress.Progress("x", disable=True))
    inference.predict(model, data.batches(x, y, 16, **NORM), CPU, None, progress=None)
    monkeypatch.setenv(progress.PROGRESS_ENV, "off")   # off: neither lines nor a bar
    train(epochs=1)
    inference.predict(model, data.batches(x, y, 16, **NORM), CPU, None)
    assert terminal.getvalue() == "" and capsys.readouterr() == ("", "")


def test_predict_shows_progress_too(monkeypatch, capsys):
    x, y = tiny_dataset(64)
    monkeypatch.setenv(progress.PROGRESS_ENV, "0")
    preds, labels = inference.predict(inference.prepare(Tiny(), CPU),
                                      data.batches(x, y, 16, **NORM), CPU, None)
    assert len(preds) == 64 and torch.equal(labels, y)
    assert "  predict: batch 4, " in capsys.readouterr().out


@pytest.mark.parametrize("value", ["soon", "-1", "inf", "nan"])
def test_a_bad_interval_is_one_line(monkeypatch, value):
    monkeypatch.setenv(progress.PROGRESS_ENV, value)
    with pytest.raises(StageError,
                       match=rf"^{progress.PROGRESS_ENV}={value}: expected the seconds"):
        progress.Progress("x")


# ---------------------------------------------------------------- downloads, archives, t-SNE

PAYLOAD = b"0123456789abcdef" * 4096


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", str(len(PAYLOAD)))
        self.end_headers()
        self.wfile.write(PAYLOAD)

    def log_message(self, *args):
        pass


def test_download_says_what_and_how_far_in_a_log(monkeypatch, capsys, tmp_path):
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        monkeypatch.setenv(progress.PROGRESS_ENV, "0")
        monkeypatch.setattr(web, "CHUNK", len(PAYLOAD) // 4)
        url = f"http://127.0.0.1:{httpd.server_address[1]}/data.bin"
        web.download([url], tmp_path / "data.bin", checksum=hashlib.sha256(PAYLOAD).hexdigest(),
                       algorithm="sha256", retries=1, timeout=5)
    finally:
        httpd.shutdown()
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"downloading {url} (64.0 KiB)"
    assert lines[-1].startswith("  data.bin: 64.0 KiB of 64.0 KiB, ") and lines[-1].endswith("/s")


def test_extraction_says_when_it_starts_and_ends(tmp_path, capsys):
    archive = tmp_path / "set.tar"
    with tarfile.open(archive, "w") as tf:
        for name in ("train/a/1.txt", "val/a/2.txt"):
            info = tarfile.TarInfo(name)
            info.size = 2048
            tf.addfile(info, io.BytesIO(b"x" * 2048))
    (tmp_path / "out").mkdir()
    archives.extract(archive, tmp_path / "out", max_bytes=1 << 20)
    first, last = capsys.readouterr().out.splitlines()
    assert first.startswith("extracting set.tar (") and "2 entries, 4.0 KiB into " in first
    assert last.startswith("extracted set.tar: 4.0 KiB in ") and last.endswith(" s")


def test_tsne_says_when_it_starts_and_ends(capsys):
    features = np.random.default_rng(0).normal(size=(40, 8))
    assert analysis.tsne_2d(features, perplexity=5, pca_dims=4, seed=0).shape == (40, 2)
    first, last = capsys.readouterr().out.splitlines()
    assert first == "t-SNE of 40 points, 8-d (PCA to 4 first) ..."
    assert last.startswith("t-SNE of 40 points done in ")
