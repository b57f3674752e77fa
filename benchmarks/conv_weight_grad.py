"""Forward + backward of AlexNet's three 3x3 convolutions on 4x4 maps, as torch's nn.Conv2d and
as models.SmallMapConv2d (weight gradient computed as a forward convolution), in bf16 autocast
and in fp32, on the CPU, channels_last, batch 128; prints milliseconds and ratios. In fp32
SmallMapConv2d is nn.Conv2d; there its autograd Function (models._WeightGradByForwardConv:
forward, input gradient, weight gradient by forward convolution) is also timed forced on, to
show why it is not used in fp32.

The two versions take turns in blocks of --steps passes, so that the slow spells of a shared
machine fall on both; each time is the median over --rounds blocks.

    python benchmarks/conv_weight_grad.py
    python benchmarks/conv_weight_grad.py --batch 64 --rounds 9
"""
import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from stages.lib import models  # noqa: E402
from stages.lib.common import keep_freed_memory  # noqa: E402


def layer_pair(conv):
    """(nn.Conv2d, SmallMapConv2d) with the weights of `conv`, channels_last."""
    plain = torch.nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size,
                            padding=conv.padding)
    plain.load_state_dict(conv.state_dict())
    return [m.to(memory_format=torch.channels_last) for m in (plain, conv)]


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
        return models._WeightGradByForwardConv.apply(x, c.weight, c.bias, c.padding)


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
    convs = [m for m in models.AlexNet().features if isinstance(m, models.SmallMapConv2d)]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch}, "
          f"median of {args.rounds} blocks of {args.steps} passes")
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
            for layer in layers:                                     # warm-up
                pass_ms(layer, x, grad, autocast, 3)
            times = [[] for _ in layers]
            for _ in range(args.rounds):
                for i, layer in enumerate(layers):
                    times[i].append(pass_ms(layer, x, grad, autocast, args.steps))
            native, small, *forced = (statistics.median(t) for t in times)
            line = (f"  {conv.in_channels:3d} -> {conv.out_channels:3d}: nn.Conv2d {native:6.2f} ms"
                    f"   SmallMapConv2d {small:6.2f} ms   ratio {small / native:.2f}x")
            if forced:
                line += (f"   its Function forced {forced[0]:6.2f} ms"
                         f"   ratio {forced[0] / native:.2f}x")
            print(line, flush=True)


if __name__ == "__main__":
    main()
