"""The CPU-fast layers that inference.prepare swaps into a model for the CPU
(stages/lib/core/cpu_layers.py) against the plain nn layers of stages/lib/models/, forward +
backward on the CPU, batch 128; prints milliseconds and ratios (fast / plain, below 1 is faster).

Dropout: cpu_layers.Dropout against nn.Dropout on AlexNet's 2048-wide dropout input, in bf16
(what autocast gives it) and fp32. Convolutions: AlexNet's three 3x3 convolutions on 4x4 maps
as nn.Conv2d and as cpu_layers.SmallMapConv2d (weight gradient computed as a forward
convolution), channels_last, in bf16 autocast and in fp32. In fp32 SmallMapConv2d is
nn.Conv2d; there its autograd Function (cpu_layers._WeightGradByForwardConv: forward, input
gradient, weight gradient by forward convolution) is also timed forced on, to show why it is
not used in fp32.

The versions take turns in blocks of --steps passes, so that the slow spells of a shared
machine fall on all of them; each time is the median over --rounds blocks. The figures that
justify these layers are what this script prints on the machine at hand.

    python -m benchmarks.conv_weight_grad
    python -m benchmarks.conv_weight_grad --batch 64 --rounds 9
"""
import argparse
import statistics
import sys
import time

import torch

from stages.lib.core import cpu_layers
from stages.lib.core.common import StageError
from stages.lib.core.runtime import keep_freed_memory
from stages.lib.models.alexnet import AlexNet


def layer_pair(conv):
    """(nn.Conv2d, SmallMapConv2d) with the weights of the nn.Conv2d `conv`, channels_last."""
    plain = conv.to(memory_format=torch.channels_last)
    small = cpu_layers.SmallMapConv2d(conv.in_channels, conv.out_channels, conv.kernel_size,
                                      padding=conv.padding)
    small.load_state_dict(conv.state_dict())
    return [plain, small.to(memory_format=torch.channels_last)]


def pass_ms(layer, x, grad, autocast, steps):
    """Milliseconds per forward + backward pass, over `steps` passes."""
    began = time.perf_counter()
    for _ in range(steps):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            out = layer(x)
        out.backward(grad)
        x.grad = None
        for p in layer.parameters():
            p.grad = None
    return (time.perf_counter() - began) / steps * 1000


class ForcedForwardConvWeightGrad(torch.nn.Module):
    """SmallMapConv2d's autograd Function, forced on, in whatever dtype the tensors have."""

    def __init__(self, conv):
        super().__init__()
        self.conv = conv

    def forward(self, x):
        c = self.conv
        return cpu_layers._WeightGradByForwardConv.apply(x, c.weight, c.bias, c.padding)


def timed_rounds(layers, x, grad, autocast, steps, rounds):
    """Median milliseconds per pass of each layer, the layers taking turns block by block."""
    for layer in layers:                                             # warm-up
        pass_ms(layer, x, grad, autocast, 3)
    times = [[] for _ in layers]
    for _ in range(rounds):
        for i, layer in enumerate(layers):
            times[i].append(pass_ms(layer, x, grad, autocast, steps))
    return [statistics.median(t) for t in times]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=20, help="passes per timed block")
    parser.add_argument("--rounds", type=int, default=5, help="timed blocks per version")
    args = parser.parse_args()
    for option in ("batch", "steps", "rounds"):
        if getattr(args, option) < 1:
            parser.error(f"--{option} must be at least 1, got {getattr(args, option)}")
    keep_freed_memory()
    torch.manual_seed(0)
    alexnet = AlexNet()
    convs = [getattr(parent, name) for parent, name in cpu_layers.small_map_convs(alexnet)]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch}, "
          f"median of {args.rounds} blocks of {args.steps} passes")
    width = alexnet.features[-2].in_features                        # the last dropout's input
    print(f"\ndropout p=0.5, {args.batch} x {width}:")
    plain, fast = torch.nn.Dropout(0.5), cpu_layers.Dropout(0.5)
    for dtype in (torch.bfloat16, torch.float32):
        x = torch.randn(args.batch, width, dtype=dtype, requires_grad=True)
        grad = torch.randn(args.batch, width, dtype=dtype)
        native, small = timed_rounds([plain, fast], x, grad, False, args.steps, args.rounds)
        print(f"  {str(dtype).removeprefix('torch.'):8s}: nn.Dropout {native:6.2f} ms"
              f"   cpu_layers.Dropout {small:6.2f} ms   ratio {small / native:.2f}x", flush=True)
    for autocast in (True, False):
        print(f"\n{'bf16 autocast' if autocast else 'fp32'}:")
        for conv in convs:
            x = torch.randn(args.batch, conv.in_channels, 4, 4).contiguous(
                memory_format=torch.channels_last).requires_grad_(True)
            grad = torch.randn(args.batch, conv.out_channels, 4, 4).contiguous(
                memory_format=torch.channels_last)
            if autocast:
                grad = grad.bfloat16()
            layers = layer_pair(conv)
            if not autocast:
                layers.append(ForcedForwardConvWeightGrad(layers[1]))
            native, small, *forced = timed_rounds(layers, x, grad, autocast, args.steps,
                                                  args.rounds)
            line = (f"  {conv.in_channels:3d} -> {conv.out_channels:3d}: nn.Conv2d {native:6.2f} ms"
                    f"   SmallMapConv2d {small:6.2f} ms   ratio {small / native:.2f}x")
            if forced:
                line += (f"   its Function forced {forced[0]:6.2f} ms"
                         f"   ratio {forced[0] / native:.2f}x")
            print(line, flush=True)


if __name__ == "__main__":
    try:
        main()
    except StageError as error:   # missing or damaged data: one line, as the stages say it
        sys.exit(f"error: {error}")
