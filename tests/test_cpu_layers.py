"""The CPU-fast layers (stages/lib/core/cpu_layers.py): dropout, the small-map convolution
and its weight gradient, each against torch's own layer; and their swap into a model prepared
for the CPU (inference.prepare), which must train bit-identically to the plain model."""
import copy

import pytest
import torch
from torch import nn

from stages.lib import models
from stages.lib.core import cpu_layers, engine, inference
from stages.lib.models.alexnet import AlexNet
from stages.lib.models.resnet50 import ResNet50
from stages.lib.models.simple_cnn import SimpleCNN

CPU = torch.device("cpu")


def test_dropout_matches_nn_dropout_semantics():
    torch.manual_seed(0)
    x = torch.ones(200, 500)
    drop = cpu_layers.Dropout(0.5)
    y = drop(x)
    assert set(y.unique().tolist()) == {0.0, 2.0}          # zeroed, or scaled by 1/(1-p)
    assert abs((y == 0).float().mean().item() - 0.5) < 0.01
    assert torch.equal(drop.eval()(x), x)                    # identity in eval mode
    assert torch.equal(cpu_layers.Dropout(0.0)(x), x)
    assert torch.equal(cpu_layers.Dropout(1.0)(x), torch.zeros_like(x))
    assert abs((cpu_layers.Dropout(0.2)(x) == 0).float().mean().item() - 0.2) < 0.01


def test_dropout_gradient_flows_through_kept_units_only():
    torch.manual_seed(1)
    x = torch.randn(64, 128, requires_grad=True)
    y = cpu_layers.Dropout(0.5)(x)
    y.sum().backward()
    kept = y != 0
    assert torch.equal(x.grad[kept], torch.full_like(x.grad[kept], 2.0))
    assert torch.equal(x.grad[~kept], torch.zeros_like(x.grad[~kept]))


def test_dropout_keeps_the_autocast_dtype():
    x = torch.randn(8, 16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        h = torch.nn.functional.linear(x, torch.randn(16, 16))
        assert cpu_layers.Dropout(0.5)(h).dtype == torch.bfloat16


def test_dropout_is_seeded():
    x = torch.ones(32, 32)
    torch.manual_seed(3)
    a = cpu_layers.Dropout(0.5)(x)
    torch.manual_seed(3)
    assert torch.equal(a, cpu_layers.Dropout(0.5)(x))


def test_dropout_mask_for_any_size_layout_and_rate():
    torch.manual_seed(0)
    x = torch.ones(301, 7, 5).transpose(0, 2)         # 10,535 elements (not a multiple of 4),
    for p in (0.1, 0.3, 0.5, 0.9):                      # not contiguous
        y = cpu_layers.Dropout(p)(x)
        assert y.shape == x.shape
        assert abs((y == 0).float().mean().item() - p) < 0.015
        assert torch.equal(y[y != 0], torch.full_like(y[y != 0], 1.0 / (1.0 - p)))


def test_dropout_masks_differ_between_calls_and_across_the_tensor():
    torch.manual_seed(0)
    x = torch.ones(256, 1024)
    a, b = cpu_layers.Dropout(0.5)(x), cpu_layers.Dropout(0.5)(x)
    assert not torch.equal(a, b)
    # the four 16-bit pieces of each random word are independent: no column pattern
    rates = (a == 0).float().view(-1, 4).mean(0)
    assert (rates - 0.5).abs().max() < 0.02


def test_dropout_off_the_cpu_is_torchs_kernel(monkeypatch):
    calls = []
    monkeypatch.setattr(cpu_layers.F, "dropout",
                        lambda x, p, training: calls.append((p, training)) or x)
    cpu_layers.Dropout(0.25)(torch.empty(4, 8, device="meta"))
    assert calls == [(0.25, True)]


def _conv_pair(bias=True, **kwargs):
    """A SmallMapConv2d and an nn.Conv2d with the same weights."""
    torch.manual_seed(0)
    small = cpu_layers.SmallMapConv2d(6, 4, bias=bias, **kwargs)
    plain = torch.nn.Conv2d(6, 4, bias=bias, **kwargs)
    plain.load_state_dict(small.state_dict())
    return small, plain


def _output_and_grads(conv, x, autocast):
    x = x.detach().clone().requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        out = conv(x)
    out.backward(torch.linspace(-1, 1, out.numel()).view(out.shape).to(out.dtype))
    grads = [x.grad] + [p.grad for p in conv.parameters()]
    return out, grads


@pytest.mark.parametrize("kernel, padding", [(3, 1), ((3, 2), (1, 0)), (1, 0)])
@pytest.mark.parametrize("bias", [True, False])
def test_weight_grad_by_forward_conv_is_the_convolution_gradient(kernel, padding, bias):
    torch.manual_seed(0)
    x = torch.randn(3, 4, 5, 6, dtype=torch.float64, requires_grad=True)
    k = (kernel, kernel) if isinstance(kernel, int) else kernel
    w = torch.randn(2, 4, *k, dtype=torch.float64, requires_grad=True)
    b = torch.randn(2, dtype=torch.float64, requires_grad=True) if bias else None
    pad = (padding, padding) if isinstance(padding, int) else padding
    fn = cpu_layers._WeightGradByForwardConv.apply
    assert torch.allclose(fn(x, w, b, pad), torch.nn.functional.conv2d(x, w, b, padding=pad))
    if bias:
        assert torch.autograd.gradcheck(lambda *t: fn(*t, pad), (x, w, b))
    else:
        assert torch.autograd.gradcheck(lambda *t: fn(*t, None, pad), (x, w))


def test_weight_grad_by_forward_conv_skips_the_input_gradient_when_not_needed(monkeypatch):
    def no_input_grad(*args, **kwargs):
        raise AssertionError("input gradient computed for an input that needs none")

    monkeypatch.setattr(torch.nn.grad, "conv2d_input", no_input_grad)
    x = torch.randn(2, 3, 4, 4)                       # an input that needs no gradient
    w = torch.randn(4, 3, 3, 3, requires_grad=True)
    cpu_layers._WeightGradByForwardConv.apply(x, w, None, (1, 1)).sum().backward()
    expected = torch.nn.grad.conv2d_weight(x, w.shape, torch.ones(2, 4, 4, 4), padding=1)
    assert torch.allclose(w.grad, expected, atol=1e-5)


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_small_map_conv_under_bf16_autocast_matches_nn_conv2d(layout):
    small, plain = _conv_pair(kernel_size=3, padding=1)
    small, plain = small.to(memory_format=layout), plain.to(memory_format=layout)
    x = torch.randn(8, 6, 4, 4).contiguous(memory_format=layout)
    out_s, grads_s = _output_and_grads(small, x, autocast=True)
    out_p, grads_p = _output_and_grads(plain, x, autocast=True)
    assert out_s.grad_fn.name() == "_WeightGradByForwardConvBackward"    # the fast path ran
    assert out_s.dtype == torch.bfloat16 and torch.equal(out_s, out_p)   # the same forward
    for g_s, g_p in zip(grads_s, grads_p):
        assert g_s.dtype == g_p.dtype == torch.float32                    # fp32 master grads
        assert (g_s - g_p).abs().max() <= 1e-2 * g_p.abs().max()          # bf16 rounding only


@pytest.mark.parametrize("kwargs", [{"kernel_size": 3, "padding": 1},
                                    {"kernel_size": 3, "stride": 2, "padding": 1},
                                    {"kernel_size": 3, "padding": "same"},
                                    {"kernel_size": 3, "padding": 1, "padding_mode": "reflect"},
                                    {"kernel_size": 3, "padding": 2, "dilation": 2},
                                    {"kernel_size": 3, "padding": 1, "groups": 2}])
def test_small_map_conv_is_nn_conv2d_outside_bf16_autocast_or_for_other_shapes(kwargs):
    small, plain = _conv_pair(**kwargs)
    x = torch.randn(4, 6, 5, 5)
    out_s, grads_s = _output_and_grads(small, x, autocast=False)
    out_p, grads_p = _output_and_grads(plain, x, autocast=False)
    assert out_s.grad_fn.name() == out_p.grad_fn.name() == "ConvolutionBackward0"
    assert torch.equal(out_s, out_p)
    assert all(torch.equal(a, b) for a, b in zip(grads_s, grads_p))
    if kwargs != {"kernel_size": 3, "padding": 1}:
        out_s, grads_s = _output_and_grads(small, x, autocast=True)       # falls back
        out_p, grads_p = _output_and_grads(plain, x, autocast=True)
        assert out_s.grad_fn.name() == out_p.grad_fn.name()
        assert torch.equal(out_s, out_p)
        assert all(torch.equal(a, b) for a, b in zip(grads_s, grads_p))


def test_small_map_conv_falls_back_without_weight_grads_or_for_other_dtypes():
    small, plain = _conv_pair(kernel_size=3, padding=1)
    x = torch.randn(4, 6, 4, 4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        with torch.no_grad():                                             # predict(), t-SNE
            assert torch.equal(small(x), plain(x))
        small.weight.requires_grad_(False)                                # frozen weights
        assert small(x).grad_fn.name() != "_WeightGradByForwardConvBackward"
        small.weight.requires_grad_(True)
        assert small(x).grad_fn.name() == "_WeightGradByForwardConvBackward"
    with torch.autocast("cpu", dtype=torch.float16):                      # only bf16 is tuned
        assert small(x).grad_fn.name() == plain(x).grad_fn.name()
    small, plain = small.double(), plain.double()
    with torch.autocast("cpu", dtype=torch.bfloat16):                     # autocast keeps fp64
        out = small(x.double())
        assert out.dtype == torch.float64 and torch.equal(out, plain(x.double()))


def test_alexnet_bf16_training_step_matches_nn_conv2d_version():
    torch.manual_seed(0)
    plain = AlexNet()
    fast = cpu_layers.convert_for_cpu(copy.deepcopy(plain))
    for i in (14, 17):            # the same dropout masks in both: only the convolutions differ
        plain.features[i] = cpu_layers.Dropout(0.5)
    x, y = torch.randn(16, 3, 32, 32), torch.randint(0, 10, (16,))
    grads = []
    for model in (fast, plain):
        torch.manual_seed(1)                                               # same dropout masks
        with torch.autocast("cpu", dtype=torch.bfloat16):
            torch.nn.functional.cross_entropy(model(x), y).backward()
        grads.append([p.grad for p in model.parameters()])
    for g_f, g_p in zip(*grads, strict=True):
        assert (g_f - g_p).abs().max() <= 2e-2 * g_p.abs().max()


# ---------------------------------------------------------------- the swap at inference.prepare

def _plain_torch(module):
    return type(module).__module__.startswith(("torch.nn", "torchvision"))


@pytest.mark.parametrize("name, classes", [("simple_cnn", 10), ("alexnet", 10), ("resnet50", 2)])
def test_models_are_plain_torch_nn(name, classes):
    model = models.build(name, classes)
    assert all(_plain_torch(m) for m in model.modules() if m is not model)


def test_prepare_for_the_cpu_swaps_in_the_fast_layers_and_keeps_the_parameters():
    torch.manual_seed(0)
    plain = AlexNet()
    before = {k: v.clone() for k, v in plain.state_dict().items()}
    params = list(plain.parameters())
    rng = torch.get_rng_state()
    model = inference.prepare(plain, CPU)
    assert torch.equal(torch.get_rng_state(), rng)                 # no random number drawn
    kinds = [type(m).__name__ for m in model.features]
    assert kinds == ["Conv2d", "MaxPool2d", "ReLU", "Conv2d", "MaxPool2d", "ReLU",
                     "SmallMapConv2d", "ReLU", "SmallMapConv2d", "ReLU", "SmallMapConv2d",
                     "MaxPool2d", "ReLU", "Flatten", "Dropout", "Linear", "ReLU", "Dropout",
                     "Linear", "ReLU"]
    assert [type(model.features[i]) for i in (6, 8, 10)] == [cpu_layers.SmallMapConv2d] * 3
    assert [type(model.features[i]) for i in (14, 17)] == [cpu_layers.Dropout] * 2
    assert [model.features[i].p for i in (14, 17)] == [0.5, 0.5]
    assert [(c.in_channels, c.out_channels, c.kernel_size, c.padding)
            for c in (model.features[i] for i in (6, 8, 10))] == [
        (128, 192, (3, 3), (1, 1)), (192, 192, (3, 3), (1, 1)), (192, 128, (3, 3), (1, 1))]
    assert all(a is b for a, b in zip(model.parameters(), params, strict=True))   # the same
    state = model.state_dict()
    assert list(state) == list(before)
    assert all(torch.equal(state[k], before[k]) for k in before)
    assert models.count_parameters(model)[0] == 6_199_498


def test_prepare_keeps_the_plain_layers_where_nothing_is_faster():
    torch.manual_seed(0)
    simple = inference.prepare(SimpleCNN(), CPU)                # 3x3 convs on 28x28 maps
    assert all(_plain_torch(m) for m in simple.modules() if m is not simple)
    resnet = inference.prepare(ResNet50(2), CPU)
    assert all(_plain_torch(m) for m in resnet.modules() if m is not resnet)
    alexnet = inference.prepare(AlexNet(), torch.device("meta"))   # not a CPU
    assert all(_plain_torch(m) for m in alexnet.modules() if m is not alexnet)


def test_convert_for_cpu_swaps_any_dropout_keeps_training_mode_and_inplace_ones():
    model = nn.Sequential(nn.Linear(4, 4), nn.Sequential(nn.Dropout(0.3), nn.Dropout(0.2,
                                                                                    inplace=True)))
    model.eval()
    cpu_layers.convert_for_cpu(model)
    inner = model[1]
    assert type(inner[0]) is cpu_layers.Dropout and inner[0].p == 0.3
    assert not inner[0].training
    assert type(inner[1]) is nn.Dropout                               # in place: left alone
    assert type(model[0]) is nn.Linear


def test_an_optimizer_made_before_the_swap_trains_the_swapped_model():
    torch.manual_seed(0)
    model = AlexNet()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    model = inference.prepare(model, CPU)
    before = model.features[6].weight.detach().clone()
    x, y = torch.randn(4, 3, 32, 32), torch.randint(0, 10, (4,))
    torch.nn.functional.cross_entropy(model(x), y).backward()
    optimizer.step()
    assert not torch.equal(model.features[6].weight, before)


def test_converted_alexnet_computes_what_the_plain_one_does_in_fp32():
    """Dropout aside (eval mode: identity in both), the fp32 forward and backward are nn's own."""
    torch.manual_seed(0)
    plain = AlexNet().eval()
    fast = cpu_layers.convert_for_cpu(copy.deepcopy(plain))
    x, y = torch.randn(8, 3, 32, 32), torch.randint(0, 10, (8,))
    outputs = []
    for model in (plain, fast):
        logits = model(x)
        torch.nn.functional.cross_entropy(logits, y).backward()
        outputs.append([logits] + [p.grad for p in model.parameters()])
    assert all(torch.equal(a, b) for a, b in zip(*outputs, strict=True))


class _AlexNetWithFastLayersBuiltIn(nn.Module):
    """AlexNet with cpu_layers' fast layers written into its definition (as models.py had them
    before they moved to cpu_layers): what inference.prepare must reproduce bit for bit on a CPU."""

    def __init__(self, num_classes=10):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 48, 5, stride=2, padding=2), nn.MaxPool2d(2), nn.ReLU(),
            nn.Conv2d(48, 128, 5, padding=2), nn.MaxPool2d(2), nn.ReLU(),
            cpu_layers.SmallMapConv2d(128, 192, 3, padding=1), nn.ReLU(),
            cpu_layers.SmallMapConv2d(192, 192, 3, padding=1), nn.ReLU(),
            cpu_layers.SmallMapConv2d(192, 128, 3, padding=1), nn.MaxPool2d(2), nn.ReLU(),
            nn.Flatten(),
            cpu_layers.Dropout(0.5), nn.Linear(512, 2048), nn.ReLU(),
            cpu_layers.Dropout(0.5), nn.Linear(2048, 2048), nn.ReLU(),
        )
        self.head = nn.Linear(2048, num_classes)

    def forward(self, x):
        return self.head(self.features(x))


@pytest.mark.parametrize("amp_dtype", [torch.bfloat16, None])
def test_alexnet_prepared_for_the_cpu_trains_bit_identically_to_the_built_in_fast_layers(
        amp_dtype):
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(48, 3, 32, 32, generator=g), torch.randint(0, 10, (48,), generator=g)
    batches = [(x[i:i + 16], y[i:i + 16]) for i in range(0, 48, 16)]
    states = []
    for build in (AlexNet, _AlexNetWithFastLayersBuiltIn):
        torch.manual_seed(0)                                     # same initial weights, masks
        model = inference.prepare(build(), CPU)
        optimizer = engine.make_optimizer("adam", model.parameters(), 1e-3)
        losses = [engine.run_epoch(model, batches, CPU, amp_dtype, optimizer) for _ in range(2)]
        states.append((losses, model.state_dict(), torch.get_rng_state()))
    (losses_a, state_a, rng_a), (losses_b, state_b, rng_b) = states
    assert losses_a == losses_b
    assert list(state_a) == list(state_b)
    assert all(torch.equal(state_a[k], state_b[k]) for k in state_a)
    assert torch.equal(rng_a, rng_b)
