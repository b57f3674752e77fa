"""The training loop, resident batching, summaries and reproducibility on tiny data."""
import math

import pytest
import torch
from torch import nn

from helpers import Tiny, tiny_dataset
from stages.lib import evaluation
from stages.lib.core import data, engine, inference, runtime
from stages.lib.core.common import StageError
from stages.lib.core.runtime import seed_everything

CPU = torch.device("cpu")


def train_tiny(seed, epochs=3, lr=0.01, amp_dtype=None, images=None):
    seed_everything(seed)
    x, y = tiny_dataset()
    if images is not None:
        x = images
    model = inference.prepare(Tiny(), CPU)
    optimizer = engine.make_optimizer("adam", model.parameters(), lr)
    generator = torch.Generator().manual_seed(seed)
    norm = dict(mean=(0.5,), std=(0.25,))
    return engine.fit(
        model, train_batches=lambda e: data.batches(x, y, 16, generator=generator, **norm),
        val_batches=lambda: data.batches(x, y, 32, **norm), epochs=epochs, optimizer=optimizer,
        device=CPU, amp_dtype=amp_dtype, lr_key="tiny.lr")


def evaluated(state):
    """The validation accuracy of a tiny model with `state`, evaluated afresh."""
    model = inference.prepare(Tiny(), CPU)
    model.load_state_dict(state)
    x, y = tiny_dataset()
    return engine.run_epoch(model, data.batches(x, y, 32, mean=(0.5,), std=(0.25,)), CPU,
                            None)[1]


def test_fit_learns_and_returns_the_last_epochs_state():
    history, state = train_tiny(0, epochs=4)
    assert [r["epoch"] for r in history] == [1, 2, 3, 4]
    assert history[-1]["val_accuracy"] > 0.9
    # the returned state is the last epoch's: evaluated again, it scores that epoch's accuracy
    assert evaluated(state) == history[-1]["val_accuracy"]


def test_the_state_is_the_last_epochs_also_when_an_earlier_one_was_better():
    """A learning rate that overshoots after a good first epoch: the state returned (the one
    model every number describes) is still the last epoch's; summarize names the best."""
    history, state = train_tiny(0, epochs=2, lr=1.0)
    summary = evaluation.summarize(history)
    assert summary["best_epoch"] == 1   # seeded: this run peaks before its last epoch
    assert summary["best_accuracy"] > history[-1]["val_accuracy"]
    assert evaluated(state) == history[-1]["val_accuracy"] == summary["accuracy"]


def test_same_seed_same_history_other_seed_differs():
    strip = lambda h: [{k: v for k, v in r.items() if k != "seconds"} for r in h]  # noqa: E731
    a, b, c = (strip(train_tiny(s)[0]) for s in (1, 1, 2))
    assert a == b
    assert a != c


def test_bf16_autocast_trains_too():
    history, _ = train_tiny(0, epochs=4, amp_dtype=torch.bfloat16)
    assert history[-1]["val_accuracy"] > 0.9


def test_non_finite_loss_stops_with_the_lr_key():
    class Exploding(Tiny):
        def forward(self, x):
            return super().forward(x) * float("nan")

    seed_everything(0)
    x, y = tiny_dataset()
    model = Exploding()
    optimizer = engine.make_optimizer("sgd", model.parameters(), 0.1)
    batches = lambda *a: data.batches(x, y, 16, mean=(0.5,), std=(0.25,))  # noqa: E731
    with pytest.raises(StageError, match=r"diverged: the loss became nan in epoch 1 .*'tiny\.lr'"):
        engine.fit(model, train_batches=batches, val_batches=batches, epochs=2,
                   optimizer=optimizer, device=CPU, amp_dtype=None, lr_key="tiny.lr")


def test_predict_with_embedding():
    _, state = train_tiny(0)
    model = inference.prepare(Tiny(), CPU)
    model.load_state_dict(state)
    x, y = tiny_dataset()
    preds, labels, feats, logits = inference.predict(
        model, data.batches(x, y, 40, mean=(0.5,), std=(0.25,)), CPU, None, embed=True)
    assert preds.shape == labels.shape == (96,) and feats.shape == (96, 16)
    assert torch.equal(logits.argmax(1), preds) and torch.equal(labels, y)


def test_batches_cover_everything_once_and_normalize():
    x, y = tiny_dataset(50)
    seen = []
    for xb, yb in data.batches(x, y, 16, generator=torch.Generator().manual_seed(0),
                               mean=(0.5,), std=(0.25,)):
        assert xb.dtype == torch.float32 and len(xb) <= 16
        seen.append(yb)
    assert sorted(torch.cat(seen).tolist()) == sorted(y.tolist())
    xb, _ = next(data.batches(x[:1], y[:1], 1, mean=(0.5,), std=(0.25,)))
    assert torch.allclose(xb, (x[:1].float() / 255 - 0.5) / 0.25)


def test_random_crop_flip_shifts_and_flips_whole_images():
    x = torch.arange(2 * 3 * 6 * 6, dtype=torch.float32).view(2, 3, 6, 6)
    out = data.random_crop_flip(x, torch.Generator().manual_seed(0), pad=0)
    for i in range(2):
        assert torch.equal(out[i], x[i]) or torch.equal(out[i], x[i].flip(-1))
    # pad=2: each image is a window of the zero-padded image, shifted by -2..2 pixels each
    # way, possibly flipped; over many images every shift and both flips occur
    x = torch.arange(64 * 3 * 6 * 6, dtype=torch.float32).view(64, 3, 6, 6) + 1
    shifted = data.random_crop_flip(x, torch.Generator().manual_seed(3), pad=2)
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    seen = set()
    for i in range(len(x)):
        found = [(dy, dx, flip) for dy in range(5) for dx in range(5) for flip in (False, True)
                 if torch.equal(shifted[i], (lambda w: w.flip(-1) if flip else w)(
                     padded[i, :, dy:dy + 6, dx:dx + 6]))]
        assert len(found) == 1, i
        seen.add(found[0])
    assert {(dy, dx) for dy, dx, _ in seen} >= {(0, 0), (4, 4), (0, 4), (4, 0)}
    assert {flip for *_, flip in seen} == {False, True}


def history(val_losses, train_losses):
    return [{"epoch": i + 1, "val_loss": v, "train_loss": t, "val_accuracy": 1 - v,
             "train_accuracy": 1 - t} for i, (v, t) in enumerate(zip(val_losses, train_losses))]


@pytest.mark.parametrize("val, train, expected", [
    ([1.0, 0.8, 0.7, 0.75, 0.9], [1.0, 0.7, 0.5, 0.3, 0.2], 3),   # classic overfitting
    ([1.0, 0.8, 0.7, 0.6, 0.5], [1.0, 0.7, 0.5, 0.3, 0.2], None),  # still improving
    ([1.0, 0.6, 0.7, 0.8], [1.0, 0.7, 0.8, 0.9], None),             # both got worse
])
def test_overfitting_epoch(val, train, expected):
    assert evaluation.overfitting_epoch(history(val, train)) == expected


def test_summarize_prefers_earliest_best():
    h = history([0.5, 0.4, 0.4], [0.9, 0.8, 0.7])
    summary = evaluation.summarize(h)
    assert summary["best_epoch"] == 2 and summary["best_accuracy"] == pytest.approx(0.6)
    assert summary["accuracy"] == pytest.approx(0.6)
    assert summary["min_val_loss_epoch"] == 2
    assert math.isclose(summary["final_train_loss"], 0.7)


def test_optimizer_and_scheduler_choices():
    params = [nn.Parameter(torch.zeros(2))]
    expected = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam, "adamw": torch.optim.AdamW}
    for name in engine.OPTIMIZERS:
        assert type(engine.make_optimizer(name, params, 0.1)) is expected[name]
    opt = engine.make_optimizer("sgd", params, 0.1)
    with pytest.raises(ValueError, match="unknown optimizer 'rmsprop'"):
        engine.make_optimizer("rmsprop", params, 0.1)
    assert engine.make_scheduler("none", opt, 5) is None
    step = engine.make_scheduler("step", opt, 5, step_size=1, gamma=0.5)
    opt.step()
    step.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(0.05)


@pytest.mark.parametrize("name", engine.OPTIMIZERS)
def test_optimizer_is_fused_on_cpu_and_matches_the_default_kernel(name):
    torch.manual_seed(0)
    fused_model, plain_model = Tiny(), Tiny()
    plain_model.load_state_dict(fused_model.state_dict())
    fused = engine.make_optimizer(name, fused_model.parameters(), 0.01, weight_decay=0.01)
    assert fused.defaults["fused"] is True
    plain = {"sgd": torch.optim.SGD(plain_model.parameters(), lr=0.01, momentum=0.9,
                                    weight_decay=0.01),
             "adam": torch.optim.Adam(plain_model.parameters(), lr=0.01, weight_decay=0.01),
             "adamw": torch.optim.AdamW(plain_model.parameters(), lr=0.01, weight_decay=0.01),
             }[name]
    x, y = tiny_dataset(32)
    for model, opt in ((fused_model, fused), (plain_model, plain)):
        for _ in range(3):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x.float() / 255), y).backward()
            opt.step()
    for a, b in zip(fused_model.parameters(), plain_model.parameters()):
        torch.testing.assert_close(a, b)


def test_optimizer_groups_may_hold_generators():
    model = Tiny()
    groups = [{"params": model.features.parameters(), "lr": 0.001},
              {"params": model.head.parameters(), "lr": 0.1}]
    opt = engine.make_optimizer("sgd", groups, 0.1)
    assert opt.defaults["fused"] is True
    assert [len(g["params"]) for g in opt.param_groups] == [4, 2]
    assert [g["lr"] for g in opt.param_groups] == [0.001, 0.1]


def test_run_info_records_the_cpu_model():
    info = runtime.run_info(CPU, torch.bfloat16)
    assert info["precision"] == "bfloat16" and info["device"] == "cpu"
    assert isinstance(info["cpu"], str) and info["cpu"].strip()
    assert info["cpu_threads"] == torch.get_num_threads() and info["gpu"] is None


def test_precision_name_is_the_dtype_without_its_module():
    assert runtime.precision_name(None) == "float32"
    assert runtime.precision_name(torch.bfloat16) == "bfloat16"
    assert runtime.precision_name(torch.float16) == "float16"
    assert runtime.run_info(CPU, None)["precision"] == "float32"


def test_no_training_state_is_written_after_the_last_epoch(tmp_path, monkeypatch):
    """The state (weights, optimizer moments, random states) after the last epoch would only
    be deleted: on a disk with room for the model but not for it, it failed a finished run."""
    from stages.lib.core import checkpoints

    saved = []
    monkeypatch.setattr(checkpoints.StateWriter, "save",
                        lambda self, path, fingerprint, **parts: saved.append(
                            len(parts["history"])))
    seed_everything(0)
    x, y = tiny_dataset()
    model = inference.prepare(Tiny(), CPU)
    norm = dict(mean=(0.5,), std=(0.25,))
    engine.fit(model, train_batches=lambda e: data.batches(x, y, 16, **norm),
               val_batches=lambda: data.batches(x, y, 32, **norm), epochs=3,
               optimizer=engine.make_optimizer("adam", model.parameters(), 0.01), device=CPU,
               amp_dtype=None, checkpoint=tmp_path / "state.pt", fingerprint="f" * 16)
    assert saved == [1, 2]


def divergence(model, lr, std, amp_dtype=None):
    """The line engine.fit stops with when `model` trains on tiny_dataset normalised by `std`."""
    x, y = tiny_dataset()
    batches = lambda *a: data.batches(x, y, 16, mean=(0.5,), std=(std,))  # noqa: E731
    with pytest.raises(StageError) as error:
        engine.fit(model, train_batches=batches, val_batches=batches, epochs=2,
                   optimizer=engine.make_optimizer("sgd", model.parameters(), lr), device=CPU,
                   amp_dtype=amp_dtype, lr_key="tiny.lr")
    return str(error.value)


@pytest.mark.parametrize("amp_dtype, tail", [
    (None, "try a lower 'tiny.lr', now 0.5, e.g. 0.05)"),
    (torch.bfloat16, "try a lower 'tiny.lr', now 0.5, e.g. 0.05, or 'precision: fp32', now "
                     "bfloat16)"),
])
def test_divergence_advice_names_the_settings_with_their_values(amp_dtype, tail):
    class Exploding(Tiny):
        def forward(self, x):
            return super().forward(x) * float("inf")

    message = divergence(Exploding(), 0.5, 0.25, amp_dtype)
    assert message.endswith(tail), message


def test_inputs_that_are_not_finite_are_named_not_the_learning_rate():
    """A dataset with a channel of one value, normalised by a standard deviation of 0: every
    input is inf or nan, and no learning rate helps; the line says so."""
    message = divergence(Tiny(), 0.1, 0.0)
    assert "the inputs themselves are not finite numbers" in message
    assert "lr" not in message.split("(", 1)[1]


def test_a_nan_validation_loss_stops_training():
    class NanWhenEvaluating(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = torch.nn.Linear(4, 2)

        def forward(self, x):
            out = self.linear(x)
            return out if self.training else out * float("nan")

    model = NanWhenEvaluating()
    batches = [(torch.randn(8, 4), torch.randint(0, 2, (8,)))]
    with pytest.raises(StageError, match=r"^training diverged: the validation loss became nan "
                                         r"in epoch 1 \(try a lower 'x\.lr', now 0\.1, e\.g\. "
                                         r"0\.01\)$"):
        engine.fit(model, train_batches=lambda epoch: batches, val_batches=lambda: batches,
                   epochs=2, optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
                   device=torch.device("cpu"), amp_dtype=None, lr_key="x.lr")
