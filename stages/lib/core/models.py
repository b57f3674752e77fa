"""The networks of the practical. Each has `embed(x)` (the intermediate representation the
t-SNE pictures show) and `head` (the last layer), and forward(x) = head(embed(x)).

These are plain torch.nn models. For a CPU, engine.prepare swaps in faster versions of the
dropout and of AlexNet's small-map convolutions (stages/lib/core/cpu_layers.py): the same layers and
parameters, other kernels."""
from torch import nn


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
            nn.Conv2d(128, 192, 3, padding=1), nn.ReLU(),
            nn.Conv2d(192, 192, 3, padding=1), nn.ReLU(),
            nn.Conv2d(192, 128, 3, padding=1), nn.MaxPool2d(2), nn.ReLU(),           # 128x2x2
            nn.Flatten(),                                                             # 512
            nn.Dropout(0.5), nn.Linear(512, 2048), nn.ReLU(),
            nn.Dropout(0.5), nn.Linear(2048, 2048), nn.ReLU(),  # the 2048-d representation
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
