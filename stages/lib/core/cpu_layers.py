"""Faster CPU versions of two layers of the practical's networks, swapped in by
inference.prepare when a model is prepared for the CPU (convert_for_cpu). They compute what the
plain layers compute, only cheaper on a CPU, and fall back to the plain computation wherever
their trick does not apply; stages/lib/models/ keeps the plain nn layers that students read.

    python -m benchmarks.conv_weight_grad    # times SmallMapConv2d against nn.Conv2d
"""
import torch
import torch.nn.functional as F
from torch import nn


class Dropout(nn.Dropout):
    """nn.Dropout's semantics (zero with probability p, scale the rest by 1/(1-p), identity in
    eval mode), with a cheaper mask on the CPU: 16 random bits per element, taken four at a time
    from 64-bit random words (`keep = bits >= threshold`, so p is rounded to a multiple of
    2^-16). torch's CPU random kernels draw one number per element on one thread; this draws a
    quarter as many. On other devices it is F.dropout, torch's fused kernel."""

    def forward(self, x):
        if not self.training or self.p == 0:
            return x
        if self.p == 1:
            return torch.zeros_like(x)
        if x.device.type != "cpu":
            return F.dropout(x, self.p, training=True)
        n = x.numel()
        words = torch.empty((n + 3) // 4, dtype=torch.int64, device=x.device)
        words.random_(-2 ** 63, None)
        bits = words.view(torch.int16)[:n].view(x.shape)    # uniform on [-2^15, 2^15)
        keep = bits >= round(self.p * 65536) - 32768
        return x * keep.to(x.dtype) * (1.0 / (1.0 - self.p))


class _WeightGradByForwardConv(torch.autograd.Function):
    """conv2d (stride 1, no dilation, one group, zero padding (ph, pw)) whose weight gradient
    is itself a forward convolution: the input with batch and channels swapped, convolved
    (with the same zero padding) with the output gradient as the kernel. The input and bias
    gradients are the usual ones."""

    @staticmethod
    def forward(ctx, x, weight, bias, padding):
        ctx.save_for_backward(x, weight)
        ctx.padding = padding
        return F.conv2d(x, weight, bias, padding=padding)

    @staticmethod
    def backward(ctx, grad_out):
        x, weight = ctx.saved_tensors
        ph, pw = ctx.padding
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = torch.nn.grad.conv2d_input(x.shape, weight, grad_out, padding=(ph, pw))
        if ctx.needs_input_grad[1]:
            # dW[o, i, u, v] = sum_{n, h, w} g[n, o, h, w] * xpad[n, i, h + u, w + v]:
            # a convolution over (i as batch, n as channels) with g (o as batch) as kernel; the
            # convolution does the padding itself (an explicit F.pad would copy the input)
            grad_w = F.conv2d(x.transpose(0, 1), grad_out.transpose(0, 1),
                              padding=(ph, pw)).transpose(0, 1)
        if ctx.needs_input_grad[2]:
            grad_b = grad_out.sum((0, 2, 3))
        return grad_x, grad_w, grad_b, None


class SmallMapConv2d(nn.Conv2d):
    """nn.Conv2d for small feature maps (AlexNet's 3x3 convolutions on 4x4 maps). On a CPU
    under bf16 autocast, oneDNN's backward-weights kernel for such layers is several times
    slower than their forward; here the weight gradient is computed as a forward convolution
    instead (_WeightGradByForwardConv). In fp32 the native kernel is the faster one, so in
    fp32, and on other devices, and when no weight gradient is wanted (no_grad, frozen
    weights), this is plain nn.Conv2d."""

    def forward(self, x):
        if not (x.device.type == "cpu" and torch.is_autocast_enabled("cpu")
                and torch.get_autocast_dtype("cpu") == torch.bfloat16
                and x.dtype in (torch.float32, torch.bfloat16)
                and self.weight.dtype == torch.float32
                and torch.is_grad_enabled() and self.weight.requires_grad
                and self.stride == (1, 1) and self.dilation == (1, 1) and self.groups == 1
                and self.padding_mode == "zeros" and isinstance(self.padding, tuple)):
            return super().forward(x)
        bf16 = torch.bfloat16
        bias = None if self.bias is None else self.bias.to(bf16)
        with torch.autocast("cpu", enabled=False):
            return _WeightGradByForwardConv.apply(x.to(bf16), self.weight.to(bf16), bias,
                                                  self.padding)


def small_map_convs(model):
    """The nn.Conv2d layers of `model` that SmallMapConv2d speeds up, as (parent, name) pairs:
    the 3x3 convolutions of `model.features` in a model that says they run on small maps
    (`small_map_convs = True`: AlexNet's, on 4x4 maps). Other networks' 3x3 convolutions
    (SimpleCNN's on 28x28 maps, ResNet-50's) stay nn.Conv2d."""
    if not getattr(model, "small_map_convs", False):
        return []
    return [(model.features, name) for name, m in model.features.named_children()
            if type(m) is nn.Conv2d and m.kernel_size == (3, 3)]


def convert_for_cpu(model):
    """Swap the CPU-fast layers into `model`, in place, and return it: every nn.Dropout becomes
    a Dropout of the same p, and AlexNet's small-map convolutions (small_map_convs) become
    SmallMapConv2d. The new layers hold the very same weight and bias Parameters, so the
    state_dict (keys and values) is unchanged, an optimizer sees the same parameters, and no
    random number is drawn."""
    swaps = [(parent, name, SmallMapConv2d) for parent, name in small_map_convs(model)]
    swaps += [(parent, name, Dropout) for parent in model.modules()
              for name, m in parent.named_children()
              if type(m) is nn.Dropout and not m.inplace]
    for parent, name, kind in swaps:
        old = getattr(parent, name)
        if kind is Dropout:
            new = Dropout(old.p)
        else:                   # built on the meta device: no initialisation, no random draws
            new = SmallMapConv2d(old.in_channels, old.out_channels, old.kernel_size,
                                 stride=old.stride, padding=old.padding, dilation=old.dilation,
                                 groups=old.groups, bias=old.bias is not None,
                                 padding_mode=old.padding_mode, device="meta")
            new.weight, new.bias = old.weight, old.bias
        new.train(old.training)
        setattr(parent, name, new)
    return model
