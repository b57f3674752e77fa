"""The AlexNet-style net of part 2 (CIFAR-10)."""
from torch import nn

EMBEDDING = "2048-d penultimate dense layer"


class AlexNet(nn.Module):
    """One tower of AlexNet sized for 32x32x3 images (CIFAR-10). 6,199,498 parameters."""

    small_map_convs = True   # its 3x3 convolutions see 4x4 maps: see stages/lib/core/cpu_layers.py

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


def build(num_classes):
    return AlexNet(num_classes)
