"""The speed benchmark's bookkeeping (its timings themselves are never asserted)."""
import importlib.util
from pathlib import Path

import pytest

spec = importlib.util.spec_from_file_location(
    "epoch_speed", Path(__file__).resolve().parents[1] / "benchmarks" / "epoch_speed.py")
epoch_speed = importlib.util.module_from_spec(spec)
spec.loader.exec_module(epoch_speed)


def recording_runs(log, names):
    def run(name):
        return (lambda k: log.append((name, "train", k)),
                lambda max_batches: log.append((name, "val", max_batches)))
    return [run(name) for name in names]


def test_runs_take_turns_chunk_by_chunk_and_each_trains_one_epoch():
    log = []
    seconds = epoch_speed.timed_epochs(recording_runs(log, "abc"), 45, None, 20)
    assert len(seconds) == 3 and all(s >= 0 for s in seconds)
    assert [entry for entry in log if entry[1] == "train"] == [
        ("a", "train", 20), ("b", "train", 20), ("c", "train", 20),
        ("a", "train", 20), ("b", "train", 20), ("c", "train", 20),
        ("a", "train", 5), ("b", "train", 5), ("c", "train", 5)]
    assert log[-3:] == [("a", "val", None), ("b", "val", None), ("c", "val", None)]


def test_chunk_zero_runs_whole_epochs_one_after_the_other():
    log = []
    epoch_speed.timed_epochs(recording_runs(log, "ab"), 7, 3, 0)
    assert log == [("a", "train", 7), ("b", "train", 7), ("a", "val", 3), ("b", "val", 3)]


@pytest.mark.parametrize("argv, message", [
    (["--repeat", "0"], "--repeat must be at least 1, got 0"),
    (["--chunk", "-1"], "--chunk must be 0 or more, got -1"),
    (["--max-batches", "-5"], "--max-batches must be 0 or more, got -5"),
])
def test_bad_options_are_one_line_usage_errors(monkeypatch, capsys, argv, message):
    monkeypatch.setattr("sys.argv", ["epoch_speed.py", *argv])
    with pytest.raises(SystemExit) as exit_:
        epoch_speed.main()
    assert exit_.value.code == 2
    assert message in capsys.readouterr().err
