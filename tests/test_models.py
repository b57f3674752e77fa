"""The networks: exact parameter counts, output shapes, layer taps, ImageNet weight loading
(their CPU-fast layers, and the plain torch.nn contract: test_cpu_layers.py)."""
import pytest
import torch
import torchvision

from stages.lib import models
from stages.lib.core.common import StageError
from stages.lib.models.alexnet import AlexNet
from stages.lib.models.resnet50 import ResNet50
from stages.lib.models.simple_cnn import SimpleCNN

CPU = torch.device("cpu")


def test_simple_cnn_counts_and_shapes():
    model = SimpleCNN()
    assert models.count_parameters(model) == (813_802, 813_600)
    x = torch.randn(3, 1, 28, 28)
    assert model(x).shape == (3, 10)
    assert model.embed(x).shape == (3, 128)
    assert torch.allclose(model.head(model.embed(x)), model(x))
    assert models.largest_layer(model) == (
        "features.6: Linear(in_features=6272, out_features=128, bias=True)", 802_944)


def test_alexnet_counts_and_shapes():
    model = AlexNet().eval()
    total, _ = models.count_parameters(model)
    assert total == 6_199_498
    x = torch.randn(2, 3, 32, 32)
    assert model(x).shape == (2, 10)
    assert model.embed(x).shape == (2, 2048)
    assert torch.allclose(model.head(model.embed(x)), model(x))


def test_alexnet_layer_order_is_the_practicals():
    kinds = [type(m).__name__ for m in AlexNet().features]
    assert kinds == ["Conv2d", "MaxPool2d", "ReLU", "Conv2d", "MaxPool2d", "ReLU",
                     "Conv2d", "ReLU", "Conv2d", "ReLU", "Conv2d", "MaxPool2d", "ReLU",
                     "Flatten", "Dropout", "Linear", "ReLU", "Dropout", "Linear", "ReLU"]


def test_resnet50_head_and_embedding():
    model = ResNet50(num_classes=3).eval()
    x = torch.randn(1, 3, 64, 64)
    assert model(x).shape == (1, 3)
    assert model.embed(x).shape == (1, 2048)


def test_load_imagenet_takes_a_resnet50_state_dict_and_drops_fc():
    torch.manual_seed(0)
    source = torchvision.models.resnet50()
    model = ResNet50(num_classes=2)
    assert model.load_imagenet(source.state_dict()) == []
    assert torch.equal(model.backbone.conv1.weight, source.conv1.weight)
    assert model.head.weight.shape == (2, 2048)


def test_load_imagenet_names_what_does_not_fit():
    model = ResNet50(num_classes=2)
    before = model.backbone.conv1.weight.clone()
    problems = model.load_imagenet(torchvision.models.resnet18().state_dict())
    assert "missing layer1.0.conv3.weight" in problems
    assert "fc.weight" not in " ".join(problems)
    assert torch.equal(model.backbone.conv1.weight, before)  # nothing loaded


@pytest.mark.parametrize("name, kind, classes, image", [
    ("simple_cnn", SimpleCNN, 10, (1, 28, 28)),
    ("alexnet", AlexNet, 10, (3, 32, 32)),
    ("resnet50", ResNet50, 2, (3, 64, 64))])
def test_build(name, kind, classes, image):
    """Each name builds its model, whose logits have one column per class and are head(embed)."""
    torch.manual_seed(0)
    model = models.build(name, classes).eval()
    assert type(model) is kind
    x = torch.randn(2, *image)
    with torch.no_grad():
        logits = model(x)
        assert logits.shape == (2, classes)
        assert torch.allclose(model.head(model.embed(x)), logits)


MODULES = sorted(p.stem for p in models.FOLDER.glob("*.py") if p.name != "__init__.py")
INPUTS = {"simple_cnn": (1, 28, 28), "alexnet": (3, 32, 32), "resnet50": (3, 64, 64)}


@pytest.mark.parametrize("name", MODULES)
def test_every_model_module_keeps_the_contract(name):
    """What the pipeline asks of a model module (stages/lib/models/__init__.py): build,
    EMBEDDING, embed and head; and a known input size here, for this test."""
    module = models.module(name)
    assert isinstance(module.EMBEDDING, str) and module.EMBEDDING
    assert name in INPUTS, f"give {name}'s input size in INPUTS"
    model = module.build(3).eval()
    with torch.no_grad():
        h = model.embed(torch.randn(2, *INPUTS[name]))
        assert h.ndim == 2 and model.head(h).shape == (2, 3)


@pytest.mark.parametrize("name", ["AlexNet", "../core/params", "__init__", "", None])
def test_a_name_with_no_model_module_is_one_line(name):
    with pytest.raises(StageError, match=r"no model named .*: the models are the modules of "
                                         r"stages/lib/models/ \(alexnet, resnet50, simple_cnn\)"):
        models.module(name)
