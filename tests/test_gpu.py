"""What only a CUDA GPU can show (marker `gpu`; skipped without CUDA; tools/gpu_check.py runs
them): two runs of the same params give the same bytes, the fp16 path with its gradient
scaler trains, a model saved on the GPU loads on a CPU-only process, one-process NCCL works
through the project's loopback rendezvous, and SyncBatchNorm conversion keeps the model's
parameters."""
import os
import subprocess
import sys

import pytest
import torch
import torch.nn as nn

from helpers import ROOT

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]

# A small conv net with BatchNorm trained 2 epochs on seeded random images with the project's
# loop; prints the sha256 of the saved model's bytes. Run as its own process: cuBLAS reads its
# workspace setting when CUDA starts, so each run starts CUDA afresh.
TRAIN = """
import hashlib, io, sys, torch, torch.nn as nn
from stages.lib.core import data, engine, inference, runtime
from stages.lib.core.files import save_torch
precision = sys.argv[1]
runtime.seed_everything(0)
device = torch.device("cuda", 0)
runtime.cuda_algorithms(deterministic=True)
amp = runtime.autocast_dtype(device, precision)
x = torch.randint(0, 256, (256, 3, 32, 32), dtype=torch.uint8, device=device)
y = torch.arange(256, device=device) % 10
model = inference.prepare(nn.Sequential(
    nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.AdaptiveAvgPool2d(4),
    nn.Flatten(), nn.Linear(256, 10)), device)
optimizer = engine.make_optimizer("sgd", model.parameters(), 0.05, 0.9)
generator = torch.Generator().manual_seed(0)
norm = dict(mean=(0.5,) * 3, std=(0.25,) * 3)
history, state = engine.fit(
    model, train_batches=lambda e: data.batches(x, y, 32, generator=generator, **norm),
    val_batches=lambda: data.batches(x, y, 64, **norm), epochs=2, optimizer=optimizer,
    device=device, amp_dtype=amp)
assert all(torch.isfinite(torch.tensor(r["train_loss"])) for r in history)
save_torch({"state_dict": inference.cpu_state(state)}, sys.argv[2])
print(hashlib.sha256(open(sys.argv[2], "rb").read()).hexdigest(), amp)
"""


def train(tmp_path, name, precision="bf16"):
    out = tmp_path / f"{name}.pt"
    result = subprocess.run([sys.executable, "-c", TRAIN, precision, str(out)], cwd=ROOT,
                            capture_output=True, text=True, timeout=300,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.returncode == 0, result.stderr[-3000:]
    return out, result.stdout.split()


def test_two_runs_of_the_same_params_give_the_same_bytes(tmp_path):
    (_, (first, _)), (_, (second, _)) = train(tmp_path, "a"), train(tmp_path, "b")
    assert first == second


def test_the_fp16_path_trains_with_the_gradient_scaler(tmp_path):
    _, (_, dtype) = train(tmp_path, "fp16", "fp16")
    assert dtype == "torch.float16"


def test_a_model_saved_on_the_gpu_loads_where_cuda_is_hidden(tmp_path):
    path, _ = train(tmp_path, "saved")
    load = ("import sys, torch; from stages.lib.core.files import torch_load; "
            "s = torch_load(sys.argv[1])['state_dict']; "
            "assert all(t.device.type == 'cpu' for t in s.values()); print(len(s))")
    result = subprocess.run([sys.executable, "-c", load, str(path)], cwd=ROOT,
                            capture_output=True, text=True, timeout=120,
                            env={**os.environ, "CUDA_VISIBLE_DEVICES": "",
                                 "PYTHONPATH": str(ROOT)})
    assert result.returncode == 0 and int(result.stdout) > 0, result.stderr[-3000:]


NCCL = """
import datetime, torch, torch.distributed as dist
from stages.lib.core import distributed, launcher
store, _ = launcher._loopback_store(60)
assert store is not None, "this torch has no TCPStore(master_listen_fd=...)"
dist.init_process_group("nccl", store=store, rank=0, world_size=1,
                        timeout=datetime.timedelta(seconds=60),
                        device_id=torch.device("cuda", 0))
ctx = distributed.Context(rank=0, world=1, backend="nccl")
t = torch.ones(4, device="cuda")
dist.all_reduce(t)
shared = ctx.gather({"rank": 0})   # one process: itself
print(int(t.sum().item()), shared == [{"rank": 0}])
dist.destroy_process_group()
"""


def test_one_process_nccl_through_the_loopback_store():
    result = subprocess.run([sys.executable, "-c", NCCL], cwd=ROOT, capture_output=True,
                            text=True, timeout=180, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.returncode == 0 and result.stdout.split() == ["4", "True"], \
        result.stderr[-3000:]


def test_syncbatchnorm_conversion_in_place_keeps_the_parameters():
    """distributed.Context.wrap converts in place and keeps using `model` (the optimizer was
    made from its parameters, the checkpoint saves its state_dict): both must survive."""
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU()).cuda()
    model(torch.randn(4, 3, 8, 8, device="cuda"))   # running statistics that are not 0 and 1
    before = {k: v.clone() for k, v in model.state_dict().items()}
    params = [id(p) for p in model.parameters()]
    nn.SyncBatchNorm.convert_sync_batchnorm(model)
    assert isinstance(model[1], nn.SyncBatchNorm)
    assert model.state_dict().keys() == before.keys()
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert [id(p) for p in model.parameters()] == params
