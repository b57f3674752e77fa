"""Bad input stops a stage before any work, with one clear line and exit status 1."""
import shutil

import pytest
import torch
import torchvision

from helpers import DELETE, assert_one_line_error, copy_project, edit_params, fails, run_stage


@pytest.mark.parametrize("key, value, pattern", [
    ("simple_cnn.lr", 0, r"'simple_cnn\.lr' must be > 0, got 0"),
    ("simple_cnn.lr", -0.1, r"'simple_cnn\.lr' must be > 0"),
    ("simple_cnn.epochs", 0, r"'simple_cnn\.epochs' must be >= 1, got 0"),
    ("simple_cnn.batch_size", 0, r"'simple_cnn\.batch_size' must be >= 1"),
    ("simple_cnn.epochs", 2.5, r"'simple_cnn\.epochs' must be an integer, got 2\.5"),
    ("simple_cnn.optimizer", "rmsprop", r"'simple_cnn\.optimizer' must be one of sgd, adam, "
                                        r"adamw; got 'rmsprop'"),
    ("simple_cnn.lr", DELETE, r"missing key 'simple_cnn\.lr'"),
    ("seed", DELETE, r"missing key 'seed'"),
    ("device", "tpu", r"'device' must be one of auto, cuda, mps, cpu; got 'tpu'"),
    ("precision", "fp8", r"'precision' must be one of auto, fp32, bf16, fp16"),
])
def test_train_params(project, monkeypatch, key, value, pattern):
    edit_params(project, {key: value})
    fails(project, monkeypatch, pattern, "train", "simple_cnn", "mnist")
    assert not (project / "models").exists() and not (project / "plots").exists()


@pytest.mark.e2e  # a stage process
def test_bad_params_as_the_user_sees_them(project):
    edit_params(project, {"alexnet.lr": -1})
    assert_one_line_error(run_stage(project, "stages.train", "alexnet", "cifar10"),
                          r"^error: params\.yaml: 'alexnet\.lr' must be > 0, got -1$")


def test_alexnet_augment_must_be_bool(project, monkeypatch):
    edit_params(project, {"alexnet.augment": "yes"})
    fails(project, monkeypatch, r"'alexnet\.augment' must be true or false", "train", "alexnet",
          "cifar10")


def test_unknown_model(project, monkeypatch):
    fails(project, monkeypatch, r"no model named 'vgg16': the models are the modules of "
                                r"stages/lib/models/ \(alexnet, resnet50, simple_cnn\)",
          "train", "vgg16", "mnist")


def test_cuda_requested_without_cuda(project, monkeypatch):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    edit_params(project, {"device": "cuda"})
    fails(project, monkeypatch, r"device 'cuda' is not available on this machine", "train",
          "simple_cnn", "mnist")


def test_missing_data(project, monkeypatch):
    fails(project, monkeypatch, r"data/raw/mnist/train\.pt not found: run `dvc repro "
                                r"download@mnist`", "train", "simple_cnn", "mnist")


@pytest.fixture(scope="module")
def raw_data(tmp_path_factory, mirror):
    """MNIST and hymenoptera as download@ leaves them, made once for this module."""
    where = copy_project(tmp_path_factory.mktemp("raw") / "project")
    for name, out in (("mnist", "data/raw/mnist"), ("hymenoptera", "data/raw/hymenoptera")):
        result = run_stage(where, "stages.download", name, out, mirror=mirror)
        assert result.returncode == 0, result.stderr
    return where / "data/raw"


@pytest.fixture
def with_data(project, raw_data):
    shutil.copytree(raw_data, project / "data/raw")
    return project


def test_diverging_training_writes_no_metrics(with_data):
    edit_params(with_data, {"simple_cnn.optimizer": "sgd", "simple_cnn.lr": 1e12,
                            "simple_cnn.epochs": 2, "simple_cnn.batch_size": 16})
    result = run_stage(with_data, "stages.train", "simple_cnn", "mnist")
    assert_one_line_error(result, r"training diverged: the loss became (nan|inf) in epoch 1 "
                                  r"\(try a lower 'simple_cnn\.lr', now 1e\+12, e\.g\. "
                                  r"1e\+11(, or 'precision: fp32', now bfloat16)?\)")
    assert not (with_data / "metrics/simple_cnn.json").exists()
    assert not (with_data / "models/simple_cnn.pt").exists()


def put_weights(project, obj=None, raw=None):
    path = project / "data/weights/resnet50.pth"
    path.parent.mkdir(parents=True, exist_ok=True)
    if raw is not None:
        path.write_bytes(raw)
    else:
        torch.save(obj, path)


class NotWeights:
    pass


@pytest.mark.parametrize("make, pattern", [
    (lambda p: put_weights(p, torchvision.models.resnet18().state_dict()),
     r"data/weights/resnet50\.pth does not fit torchvision's ResNet-50 \(wrong architecture\?\): "
     r"\d+ mismatched keys, e\.g\. missing layer1\.0\.bn3\.bias"),
    (lambda p: put_weights(p, raw=b"\x00not a weights file" * 100),
     r"^data/weights/resnet50\.pth is not a PyTorch weights file \(.+\): run "
     r"`dvc repro -f download@resnet50`$"),
    (lambda p: put_weights(p, {"model": NotWeights()}),
     r"^data/weights/resnet50\.pth is not a PyTorch weights file \(refused by the safe "
     r"loader: .+\): run `dvc repro -f download@resnet50`$"),
    (lambda p: put_weights(p, [1, 2, 3]),
     r"data/weights/resnet50\.pth is not a state dict of tensors"),
    (lambda p: None, r"data/weights/resnet50\.pth not found: run `dvc repro download@resnet50`"),
])
def test_bad_weights(with_data, monkeypatch, make, pattern):
    make(with_data)
    edit_params(with_data, {"transfer.image_size": 32, "transfer.num_workers": 0})
    fails(with_data, monkeypatch, pattern, "features")
    assert not (with_data / "data/features").exists()


def small_transfer(project, workers=0):
    edit_params(project, {"transfer.image_size": 32, "transfer.num_workers": workers,
                          "transfer.scratch.epochs": 1, "transfer.batch_size": 4})


def test_one_class_dataset(with_data, monkeypatch):
    shutil.rmtree(with_data / "data/raw/hymenoptera/val/bees")
    small_transfer(with_data)
    fails(with_data, monkeypatch, r"dataset data/raw/hymenoptera: val/ needs at least two class "
                                  r"folders, found 1", "transfer", "scratch")


def test_empty_class_folder(with_data, monkeypatch):
    for image in (with_data / "data/raw/hymenoptera/train/bees").iterdir():
        image.unlink()
    small_transfer(with_data)
    fails(with_data, monkeypatch, r"class folder train/bees has no images", "transfer",
          "scratch")


def test_unreadable_image_is_named(with_data):
    """Read in a DataLoader worker process: the error still comes out as one line."""
    victim = sorted((with_data / "data/raw/hymenoptera/train/ants").glob("*.jpg"))[0]
    victim.write_bytes(b"this is not a jpeg")
    small_transfer(with_data, workers=1)
    result = run_stage(with_data, "stages.transfer", "scratch")
    assert_one_line_error(result, rf"cannot read image .*{victim.name}")
    assert not (with_data / "metrics").exists()


@pytest.mark.parametrize("key, value, pattern", [
    ("transfer.scratch.lr", 0, r"'transfer\.scratch\.lr' must be > 0"),
    ("transfer.scratch.scheduler", "plateau", r"'transfer\.scratch\.scheduler' must be one of "
                                              r"none, step, cosine"),
    ("transfer.scratch.augment.crop_scale_min", 1.5, r"crop_scale_min' must be <= 1"),
    ("transfer.image_size", 8, r"'transfer\.image_size' must be >= 32"),
    ("transfer.dataset", "flowers", r"data/raw/flowers not found: set transfer\.dataset"),
])
def test_transfer_params(with_data, monkeypatch, key, value, pattern):
    edit_params(with_data, {key: value})
    fails(with_data, monkeypatch, pattern, "transfer", "scratch")


@pytest.mark.parametrize("key, value, pattern", [
    ("transfer.svm.C", 0, r"'transfer\.svm\.C' must be > 0"),
    ("transfer.svm.kernel", "cubic", r"'transfer\.svm\.kernel' must be one of linear, rbf"),
    ("transfer.svm.gamma", "big", r"'transfer\.svm\.gamma' must be scale, auto or a number"),
    ("transfer.svm.grid", {"nu": [1]}, r"'transfer\.svm\.grid' maps SVC settings"),
])
def test_svm_params(project, monkeypatch, key, value, pattern):
    edit_params(project, {key: value})
    fails(project, monkeypatch, pattern, "svm")


def test_report_language(project, monkeypatch):
    edit_params(project, {"report.language": "fr"})
    fails(project, monkeypatch, r"'report\.language' must be one of en, es; got 'fr'", "report")


def test_a_full_disk_stops_training_before_it_starts(with_data, monkeypatch):
    """Room for the model, DVC's copy and the training state is checked before the first
    epoch: a full disk is one line naming what needs the room, and nothing is written."""
    import collections

    from stages.lib import training

    edit_params(with_data, {"simple_cnn.epochs": 1, "simple_cnn.train_samples": 64})
    (with_data / ".dvc/cache").mkdir(parents=True, exist_ok=True)
    usage = collections.namedtuple("usage", "total used free")
    monkeypatch.setattr(training.shutil, "disk_usage", lambda path: usage(10**9, 10**9, 2**20))
    fails(with_data, monkeypatch, r"^no space left on device for the model, the training "
                                  r"state, DVC's copy of the model \(needed about 24\.8 MiB, "
                                  r"free 1\.0 MiB in .*\): free some space, then run the stage "
                                  r"again$", "train", "simple_cnn", "mnist")
    assert not (with_data / "models").exists()
    assert not list(with_data.glob(".dvc/tmp/**/*.pt"))   # no training state either
    assert not (with_data / "plots/simple_cnn/live").exists()


def test_unwritable_outputs_stop_the_stage_before_training(project, monkeypatch):
    (project / "metrics").write_text("a file where the folder should be")
    fails(project, monkeypatch, r"^cannot write to metrics/: metrics is not a folder$", "train",
          "simple_cnn", "mnist")
    assert not (project / "models").exists()
