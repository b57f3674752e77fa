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

    python benchmarks/conv_weight_grad.py
    python benchmarks/conv_weight_grad.py --batch 64 --rounds 9
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

