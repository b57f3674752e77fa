"""The Simple CNN of part 1 (MNIST)."""
from torch import nn

EMBEDDING = "128-d dense layer"


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


def build(num_classes):
    return SimpleCNN(num_classes)
