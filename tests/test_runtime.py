"""Where a stage computes and in which precision, with the GPU's capabilities mocked: native
bf16 only where the card computes it, fp16 with the scaler on older cards (T4, V100); a GPU
that CUDA cannot use is said, not silently skipped; saved models hold CPU tensors."""
import warnings

import pytest
import torch

from stages.lib.core import common, inference, runtime
from stages.lib.core.common import StageError

CUDA = torch.device("cuda", 0)


@pytest.mark.parametrize("capability, dtype, reason", [
    ((7, 5), torch.float16, "auto: fp16 with gradient scaling, compute capability 7.5 has no "
                            "native bf16"),   # T4
    ((7, 0), torch.float16, "auto: fp16 with gradient scaling, compute capability 7.0 has no "
                            "native bf16"),   # V100
    ((8, 0), torch.bfloat16, "auto: bf16, native on compute capability 8.0"),   # A100
    ((9, 0), torch.bfloat16, "auto: bf16, native on compute capability 9.0"),   # H100
])
def test_auto_precision_on_gpus(monkeypatch, capability, dtype, reason):
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)  # emulation
    assert runtime.precision_choice(CUDA, "auto") == (dtype, reason)
    assert runtime.autocast_dtype(CUDA, "auto") == dtype


def test_set_precisions_and_the_cpu():
    assert runtime.precision_choice(CUDA, "fp32") == (None, "fp32: set in params.yaml")
    assert runtime.precision_choice(CUDA, "bf16") == (torch.bfloat16, "bf16: set in params.yaml")
    dtype, why = runtime.precision_choice(torch.device("cpu"), "auto")
    assert dtype in (None, torch.bfloat16) and why.startswith(("auto: bf16", "auto: fp32"))
    with pytest.raises(StageError, match="precision fp16 is for GPUs"):
        runtime.precision_choice(torch.device("cpu"), "fp16")


def unusable_gpu(monkeypatch, message):
    def is_available():
        if message:
            warnings.warn(message, UserWarning, stacklevel=2)
        return False

    monkeypatch.setattr(torch.cuda, "is_available", is_available)
    monkeypatch.setattr("os.path.exists", lambda p: p in runtime.NVIDIA_PRESENT)
    monkeypatch.setattr(runtime, "_warned", False)


def test_a_gpu_cuda_cannot_use_is_said_once(monkeypatch, capsys):
    driver = ("CUDA initialization: The NVIDIA driver on your system is too old (found "
              "version 11040). Please update your GPU driver")
    unusable_gpu(monkeypatch, driver)
    assert runtime.pick_device("auto").type in ("cpu", "mps")
    runtime.pick_device("auto")
    out = capsys.readouterr().out
    assert out.count("warning: an NVIDIA GPU is present but CUDA cannot be used") == 1
    assert "too old (found version 11040)" in out and out.count("\n") == 1
    with pytest.raises(StageError, match=r"device 'cuda' is not available on this machine: "
                                         r"CUDA initialization: The NVIDIA driver"):
        runtime.pick_device("cuda")


def test_no_gpu_no_warning(monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr("os.path.exists", lambda p: False)
    monkeypatch.setattr(runtime, "_warned", False)
    runtime.pick_device("auto")
    assert capsys.readouterr().out == ""


def test_saved_states_hold_cpu_tensors():
    state = inference.cpu_state({"w": torch.ones(2), "n": 3})
    assert state["w"].device.type == "cpu" and state["n"] == 3


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_a_gpu_trained_state_loads_without_map_location(tmp_path):
    import io

    model = torch.nn.Linear(2, 2).cuda()
    buffer = io.BytesIO()
    torch.save(inference.cpu_state(model.state_dict()), buffer)
    loaded = torch.load(io.BytesIO(buffer.getvalue()), weights_only=True)
    assert all(t.device.type == "cpu" for t in loaded.values())


@pytest.mark.parametrize("deterministic", [True, False])
def test_deterministic_cuda_algorithms(monkeypatch, deterministic):
    """`deterministic` on a GPU: cuDNN's and cuBLAS's deterministic algorithms and torch's
    deterministic mode, or cudnn.benchmark for speed (the flags set, no GPU needed)."""
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    calls = []
    monkeypatch.setattr(torch, "use_deterministic_algorithms",
                        lambda mode, warn_only=False: calls.append((mode, warn_only)))
    monkeypatch.setattr(torch.backends.cudnn, "deterministic", not deterministic)
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", deterministic)
    runtime.cuda_algorithms(deterministic)
    assert torch.backends.cudnn.deterministic is deterministic
    assert torch.backends.cudnn.benchmark is (not deterministic)
    assert calls == [(deterministic, True)]
    import os

    assert (os.environ.get("CUBLAS_WORKSPACE_CONFIG") == ":4096:8") is deterministic


def test_malloc_is_tuned_by_the_stages_that_run_a_network_only(monkeypatch, tmp_path):
    """runtime.setup (train, transfer, tsne, features, compare) keeps freed memory for the next
    step; a stage that runs no network (download, datasets, svm, report) leaves malloc as is.
    common.run runs here in the test's process: in a folder of its own (its stage lock is not
    the checkout's), without the parent watcher (a thread and a death signal that would stay in
    this process), its SIGTERM handler put back after."""
    import signal
    import sys
    import threading

    from stages.lib.core import common, params

    calls = []
    monkeypatch.setattr(runtime, "keep_freed_memory", lambda: calls.append("tuned"))
    monkeypatch.setattr(sys, "argv", ["stage"])
    monkeypatch.setattr(common, "_watch_parents", lambda: calls.append("watched"))
    monkeypatch.chdir(tmp_path)
    handler = signal.getsignal(signal.SIGTERM)
    try:
        with pytest.raises(SystemExit):
            common.run(lambda argv: sys.exit(0))
    finally:
        signal.signal(signal.SIGTERM, handler)
    assert calls == ["watched"]
    assert not [t for t in threading.enumerate() if t.name == "parent-watch"]
    calls.clear()
    runtime.setup(params.Shared(seed=0, device="cpu", precision="fp32", deterministic=True))
    assert calls == ["tuned"]


def test_no_two_random_streams_share_a_seed():
    seeds = {(purpose, rank): common.seed_for(42, purpose, rank)
             for purpose in common.SEED_PURPOSES for rank in range(8)}
    # one process keeps params.yaml's seed for its own streams (results stay as they were);
    # every other stream has a seed of its own
    assert seeds.pop(("global", 0)) == seeds.pop(("loader", 0)) == 42
    assert len(set(seeds.values()) | {42}) == len(seeds) + 1
    assert common.seed_for(42, "augment", 1) == seeds["augment", 1]   # deterministic
    assert all(0 <= s < 2**63 for s in seeds.values())
