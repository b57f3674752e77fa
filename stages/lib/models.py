"""The networks of the practical. Each has `embed(x)` (the intermediate representation the
t-SNE pictures show) and `head` (the last layer), and forward(x) = head(embed(x))."""
import torch
import torch.nn.functional as F
from torch import nn


class Dropout(nn.Dropout):
    """nn.Dropout's semantics (zero with probability p, scale the rest by 1/(1-p), identity in
    eval mode), with a cheaper mask on the CPU: 16 random bits per element, taken four at a time
    from 64-bit random words (`keep = bits >= threshold`, so p is rounded to a multiple of
    2^-16). torch's CPU random kernels draw one number per element on one thread; this draws a
    quarter as many. On a 2-core Intel Xeon, forward and backward of a 128x2048 bf16 batch took
    0.43x the time of the `rand_like(x) >= p` mask used before (1.9 against 4.4 ms, the two
    taking turns), which on an AMD EPYC had taken half the time of torch's bernoulli kernel.
    On other devices it is F.dropout, torch's fused kernel."""

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
            # convolution pads (an explicit F.pad copy made the whole AlexNet step 3-7 % slower)
            grad_w = F.conv2d(x.transpose(0, 1), grad_out.transpose(0, 1),
                              padding=(ph, pw)).transpose(0, 1)
        if ctx.needs_input_grad[2]:
            grad_b = grad_out.sum((0, 2, 3))
        return grad_x, grad_w, grad_b, None


class SmallMapConv2d(nn.Conv2d):
    """nn.Conv2d for small feature maps (AlexNet's 3x3 convolutions on 4x4 maps). On a CPU
    under bf16 autocast, oneDNN's backward-weights kernel for such layers took 7-13 ms where
    the forward took 1-2 ms; here the weight gradient is computed as a forward convolution
    instead (_WeightGradByForwardConv). benchmarks/conv_weight_grad.py on a 2-core Intel Xeon
    with AMX, three runs: forward + backward of the three layers 0.51-0.69x of nn.Conv2d's time
    in bf16. In fp32 the native kernel is the faster one (the Function forced on: 1.17-1.55x),
    so in fp32, and on other devices, and when no weight gradient is wanted (no_grad, frozen
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


class SimpleCNN(nn.Module):
    """Two 3x3 convolutions, a max-pool and two dense layers (MNIST, 28x28x1).
    813,802 parameters, 813,600 of them weights."""

    def __init__(self, num_classes=10):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(),
            nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(),
            nn.MaxPool2d(2), nn.Flatten(),                    # 32 x 14 x 14 = 6272
            nn.Linear(6272, 128), nn.ReLU(),                  # the 128-d representation
        )
        self.head = nn.Linear(128, num_classes)

    def embed(self, x):
        return self.features(x)

    def forward(self, x):
        return self.head(self.embed(x))


class AlexNet(nn.Module):
    """One tower of AlexNet sized for 32x32x3 images (CIFAR-10). 6,199,498 parameters."""

    def __init__(self, num_classes=10):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 48, 5, stride=2, padding=2), nn.MaxPool2d(2), nn.ReLU(),     # 48x8x8
            nn.Conv2d(48, 128, 5, padding=2), nn.MaxPool2d(2), nn.ReLU(),            # 128x4x4
            SmallMapConv2d(128, 192, 3, padding=1), nn.ReLU(),
            SmallMapConv2d(192, 192, 3, padding=1), nn.ReLU(),
            SmallMapConv2d(192, 128, 3, padding=1), nn.MaxPool2d(2), nn.ReLU(),      # 128x2x2
            nn.Flatten(),                                                             # 512
            Dropout(0.5), nn.Linear(512, 2048), nn.ReLU(),
            Dropout(0.5), nn.Linear(2048, 2048), nn.ReLU(),  # the 2048-d representation
        )
        self.head = nn.Linear(2048, num_classes)

    def embed(self, x):
        return self.features(x)

    def forward(self, x):
        return self.head(self.embed(x))


class ResNet50(nn.Module):
    """torchvision's ResNet-50 with its 1000-way ImageNet layer replaced by `head`;
    embed(x) is the 2048-d global-average-pooled feature."""

    def __init__(self, num_classes):
        super().__init__()
        from torchvision.models import resnet50

        self.backbone = resnet50()
        self.backbone.fc = nn.Identity()
        self.head = nn.Linear(2048, num_classes)

    def embed(self, x):
        return self.backbone(x)

    def forward(self, x):
        return self.head(self.embed(x))

    def load_imagenet(self, state_dict):
        """Load a torchvision ResNet-50 ImageNet state dict into the backbone (its `fc` layer is
        dropped). Returns the names of missing or unexpected keys (empty when it fits)."""
        state = {k: v for k, v in state_dict.items() if not k.startswith("fc.")}
        own = self.backbone.state_dict()
        problems = [f"missing {k}" for k in sorted(set(own) - set(state))]
        problems += [f"unexpected {k}" for k in sorted(set(state) - set(own))]
        problems += [f"{k} has shape {tuple(state[k].shape)}, expected {tuple(own[k].shape)}"
                     for k in sorted(set(own) & set(state)) if state[k].shape != own[k].shape]
        if not problems:
            self.backbone.load_state_dict(state)
        return problems


MODELS = {"simple_cnn": SimpleCNN, "alexnet": AlexNet, "resnet50": ResNet50}


def build(name, num_classes):
    return MODELS[name](num_classes)


def count_parameters(model):
    """(trainable parameters, trainable parameters that are not biases)."""
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    total = sum(p.numel() for _, p in params)
    no_bias = sum(p.numel() for n, p in params if not n.endswith("bias"))
    return total, no_bias


def largest_layer(model):
    """(description, parameter count) of the layer with the most trainable parameters."""
    sizes = [(sum(p.numel() for p in m.parameters(recurse=False) if p.requires_grad), name, m)
             for name, m in model.named_modules()]
    count, name, module = max(sizes, key=lambda s: s[0])
    return f"{name}: {module}", count
