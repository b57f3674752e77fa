"""ResNet-50 of part 3: torchvision's, its 1000-way ImageNet layer replaced by `head`;
embed(x) is the 2048-d global-average-pooled feature."""
from torch import nn
from torchvision.models import resnet50

EMBEDDING = "2048-d global-average-pooled features"


class ResNet50(nn.Module):
    def __init__(self, num_classes):
        super().__init__()
        self.backbone = resnet50()
        self.backbone.fc = nn.Identity()
        self.head = nn.Linear(2048, num_classes)
        self.frozen = False

    def freeze_backbone(self):
        """Train the head only: the backbone's weights get no gradient, and its BatchNorm
        layers keep the statistics they have (eval mode, also while the model trains)."""
        self.backbone.requires_grad_(False)
        self.frozen = True
        return self

    def train(self, mode=True):
        super().train(mode)
        if self.frozen:
            self.backbone.eval()
        return self

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


def build(num_classes):
    return ResNet50(num_classes)
