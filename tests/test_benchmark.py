"""The speed benchmark's bookkeeping (its timings themselves are never asserted)."""
import sys

import pytest

from benchmarks import conv_weight_grad, epoch_speed, full_run, write_doc


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


def test_conv_benchmark_times_every_small_map_layer_in_both_precisions(monkeypatch, capsys):
    monkeypatch.setattr("sys.argv", ["conv_weight_grad.py", "--batch", "2", "--steps", "1",
                                     "--rounds", "1"])
    conv_weight_grad.main()
    out = capsys.readouterr().out
    bf16, fp32 = out.split("bf16 autocast:")[1].split("fp32:")
    for section in (bf16, fp32):
        assert [line.split(":")[0].strip() for line in section.strip().splitlines()] == [
            "128 -> 192", "192 -> 192", "192 -> 128"]
    assert bf16.count("ratio") == 3 and fp32.count("ratio") == 6   # + the forced variant


def test_conv_benchmark_forced_variant_computes_the_same_gradients():
    import torch

    torch.manual_seed(0)
    conv = torch.nn.Conv2d(4, 3, 3, padding=1)
    forced = conv_weight_grad.ForcedForwardConvWeightGrad(conv)
    x = torch.randn(2, 4, 4, 4, dtype=torch.float64)
    conv = conv.double()
    torch.nn.functional.conv2d(x, conv.weight, conv.bias, padding=1).sum().backward()
    expected = conv.weight.grad.clone()
    conv.weight.grad = None
    forced(x).sum().backward()
    assert torch.allclose(conv.weight.grad, expected)


def test_conv_benchmark_rejects_sizes_below_one(monkeypatch, capsys):
    monkeypatch.setattr("sys.argv", ["conv_weight_grad.py", "--rounds", "0"])
    with pytest.raises(SystemExit) as exit_:
        conv_weight_grad.main()
    assert exit_.value.code == 2
    assert "--rounds must be at least 1, got 0" in capsys.readouterr().err


@pytest.mark.parametrize("channels", [1, 3])
def test_reference_samples_match_the_engine_batches(channels):
    """The reference reads the prepared tensors through PIL as torchvision's dataset classes do
    (no unpickling of upstream files) and must see the same normalized images as the engine."""
    import torch

    from stages.lib.core import data

    name = "simple_cnn" if channels == 1 else "alexnet"
    generator = torch.Generator().manual_seed(0)
    record = {"images": torch.randint(0, 256, (4, channels, 8, 8), dtype=torch.uint8,
                                      generator=generator),
              "labels": torch.tensor([3, 1, 0, 2])}
    train, _ = epoch_speed.reference_datasets(name, record, record)
    mean, std = data.NORMALIZATION[epoch_speed.DATASETS[name]]
    (expected, labels), = data.batches(record["images"], record["labels"], 4, mean=mean, std=std)
    for i in range(4):
        image, label = train[i]
        assert label == labels[i]
        torch.testing.assert_close(image, expected[i])


@pytest.mark.parametrize("script, args, missing, command", [
    ("epoch_speed", ["--models", "simple_cnn"], "data/raw/mnist/train.pt not found",
     "dvc repro download@mnist"),
    ("transfer_speed", [], "data/raw/hymenoptera not found", "dvc repro download@hymenoptera"),
    ("analysis_speed", [], "models/alexnet.pt", "train@alexnet"),
])
def test_missing_data_is_one_line_naming_the_stage_to_run(tmp_path, monkeypatch, script, args,
                                                          missing, command):
    """A fresh clone without the data: `make bench` first runs the download stages; were the
    data still missing, a benchmark says in one line what to run (no traceback)."""
    import runpy
    import shutil
    import sys

    shutil.copy(epoch_speed.ROOT / "params.yaml", tmp_path / "params.yaml")
    shutil.copytree(epoch_speed.ROOT / "benchmarks", tmp_path / "benchmarks")
    copy = tmp_path / "benchmarks" / f"{script}.py"
    monkeypatch.setattr(sys, "argv", [str(copy), *args])
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_:
        runpy.run_path(str(copy), run_name="__main__")
    message = str(exit_.value.code)
    assert message.startswith("error: ") and "\n" not in message
    assert missing in message and command in message


def test_the_full_run_times_each_stage_from_dvcs_lines_to_the_next(tmp_path):
    script = ("import time; print('Running stage \\'download@mnist\\':', flush=True); "
              "time.sleep(0.3); print('some output'); "
              "print('Running stage \\'transfer@finetune\\':', flush=True); time.sleep(0.1); "
              "raise SystemExit(3)")
    times, status, output = full_run.timed_repro(tmp_path, False, [sys.executable, "-c", script])
    assert status == 3 and "some output" in output
    assert list(times) == ["download@mnist", "transfer@finetune"]
    # each sleep falls in its own stage's span (no bound on seconds: a loaded machine reads
    # the lines late)
    assert times["download@mnist"] > times["transfer@finetune"] > 0
    text = full_run.document({"download@mnist": 60.0, "train@alexnet": 120.0,
                              "transfer@finetune": 30.0}, status, 215.0, "resnet50")
    assert "| **weights-free part** |   180.0 |   3.0 |" in text   # finetune needs the weights
    assert "| **whole run** |   215.0 |   3.6 |" in text
    assert "Accepted unverified (DATASETS_ACCEPT_UNVERIFIED): resnet50" in text
    assert "ended with status 3" in text


def test_the_doc_holds_each_benchmarks_output_and_keeps_the_gpu_section(tmp_path, capsys):
    """make bench's writer (benchmarks/write_doc.py): a header naming the machine, every
    benchmark's output in one block, a `## GPU` section a person added kept as it was."""
    doc = tmp_path / "benchmarks.md"
    doc.write_text("# Benchmarks\n\nold\n\n## GPU\n\nThe check's summary, 2026-12-01.\n")
    runs = [[sys.executable, "-c", f"print('benchmark {n}: ratio 0.5x')"] for n in (1, 2)]
    assert write_doc.main([], runs=runs, doc=doc) == 0
    text = doc.read_text()
    assert text.startswith("# Benchmarks\n\nWritten by `make bench` on ")
    assert "cores, load average " in text.splitlines()[2]
    assert "```\nbenchmark 1: ratio 0.5x\nbenchmark 2: ratio 0.5x\n```\n" in text
    assert text.endswith("\n## GPU\n\nThe check's summary, 2026-12-01.\n") and "old" not in text


def test_a_failing_benchmark_leaves_the_doc_as_it_was(tmp_path, capsys):
    doc = tmp_path / "benchmarks.md"
    doc.write_text("as it was\n")
    runs = [[sys.executable, "-c", "print('fine')"],
            [sys.executable, "-c", "import sys; sys.exit('epoch_speed: no data')"]]
    assert write_doc.main([], runs=runs, doc=doc) == 1
    assert doc.read_text() == "as it was\n"
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["make bench: -c failed (epoch_speed: no data); benchmarks.md is unchanged"]


@pytest.mark.parametrize("flag", ["-h", "--help"])
def test_help_says_what_it_does_and_runs_nothing(tmp_path, capsys, flag):
    doc = tmp_path / "benchmarks.md"
    runs = [[sys.executable, "-c", "raise SystemExit('a benchmark ran')"]]
    assert write_doc.main([flag], runs=runs, doc=doc) == 0
    assert "python -m benchmarks.write_doc" in capsys.readouterr().out and not doc.exists()
