"""The networks: exact parameter counts, output shapes, layer taps, ImageNet weight loading."""
import pytest
import torch
import torchvision

from stages.lib import models


def test_simple_cnn_counts_and_shapes():
    model = models.SimpleCNN()
    assert models.count_parameters(model) == (813_802, 813_600)
    x = torch.randn(3, 1, 28, 28)
    assert model(x).shape == (3, 10)
    assert model.embed(x).shape == (3, 128)
    assert torch.allclose(model.head(model.embed(x)), model(x))
    assert models.largest_layer(model) == (
        "features.6: Linear(in_features=6272, out_features=128, bias=True)", 802_944)


def test_alexnet_counts_and_shapes():
    model = models.AlexNet().eval()
    total, _ = models.count_parameters(model)
    assert total == 6_199_498
    x = torch.randn(2, 3, 32, 32)
    assert model(x).shape == (2, 10)
    assert model.embed(x).shape == (2, 2048)
    assert torch.allclose(model.head(model.embed(x)), model(x))


def test_alexnet_layer_order_is_the_practicals():
    kinds = [type(m).__name__ for m in models.AlexNet().features]
    assert kinds == ["Conv2d", "MaxPool2d", "ReLU", "Conv2d", "MaxPool2d", "ReLU",
                     "Conv2d", "ReLU", "Conv2d", "ReLU", "Conv2d", "MaxPool2d", "ReLU",
                     "Flatten", "Dropout", "Linear", "ReLU", "Dropout", "Linear", "ReLU"]


def test_resnet50_head_and_embedding():
    model = models.ResNet50(num_classes=3).eval()
    x = torch.randn(1, 3, 64, 64)
    assert model(x).shape == (1, 3)
    assert model.embed(x).shape == (1, 2048)


def test_load_imagenet_takes_a_resnet50_state_dict_and_drops_fc():
    torch.manual_seed(0)
    source = torchvision.models.resnet50()
    model = models.ResNet50(num_classes=2)
    assert model.load_imagenet(source.state_dict()) == []
    assert torch.equal(model.backbone.conv1.weight, source.conv1.weight)
    assert model.head.weight.shape == (2, 2048)


def test_load_imagenet_names_what_does_not_fit():
    model = models.ResNet50(num_classes=2)
    before = model.backbone.conv1.weight.clone()
    problems = model.load_imagenet(torchvision.models.resnet18().state_dict())
    assert "missing layer1.0.conv3.weight" in problems
    assert "fc.weight" not in " ".join(problems)
    assert torch.equal(model.backbone.conv1.weight, before)  # nothing loaded


@pytest.mark.parametrize("name, classes", [("simple_cnn", 10), ("alexnet", 10), ("resnet50", 2)])
def test_build(name, classes):
    assert isinstance(models.build(name, classes), models.MODELS[name])


def test_dropout_matches_nn_dropout_semantics():
    torch.manual_seed(0)
    x = torch.ones(200, 500)
    drop = models.Dropout(0.5)
    y = drop(x)
    assert set(y.unique().tolist()) == {0.0, 2.0}          # zeroed, or scaled by 1/(1-p)
    assert abs((y == 0).float().mean().item() - 0.5) < 0.01
    assert torch.equal(drop.eval()(x), x)                    # identity in eval mode
    assert torch.equal(models.Dropout(0.0)(x), x)
    assert torch.equal(models.Dropout(1.0)(x), torch.zeros_like(x))
    assert abs((models.Dropout(0.2)(x) == 0).float().mean().item() - 0.2) < 0.01


def test_dropout_gradient_flows_through_kept_units_only():
    torch.manual_seed(1)
    x = torch.randn(64, 128, requires_grad=True)
    y = models.Dropout(0.5)(x)
    y.sum().backward()
    kept = y != 0
    assert torch.equal(x.grad[kept], torch.full_like(x.grad[kept], 2.0))
    assert torch.equal(x.grad[~kept], torch.zeros_like(x.grad[~kept]))


def test_dropout_keeps_the_autocast_dtype():
    x = torch.randn(8, 16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        h = torch.nn.functional.linear(x, torch.randn(16, 16))
        assert models.Dropout(0.5)(h).dtype == torch.bfloat16


def test_dropout_is_seeded():
    x = torch.ones(32, 32)
    torch.manual_seed(3)
    a = models.Dropout(0.5)(x)
    torch.manual_seed(3)
    assert torch.equal(a, models.Dropout(0.5)(x))
