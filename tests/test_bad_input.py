"""One clear line and a non-zero exit for each kind of bad input or environment (issue cases:
divergence, bad params, corrupt files, paths outside the project, unwritable outputs)."""
import gzip
import shutil

import numpy as np
import pytest
import torch

from helpers import OUTS, assert_one_line_error, edit_params, fails, run_stage
from stages.lib.core import engine, inference
from stages.lib.core.common import StageError
from tiny_mirror import write_sha256sums

# ---------------------------------------------------------------- params.yaml

def test_nan_is_not_a_learning_rate(project, monkeypatch):
    text = (project / "params.yaml").read_text().replace("lr: 0.0005", "lr: .nan", 1)
    (project / "params.yaml").write_text(text)
    fails(project, monkeypatch, r"^params\.yaml: 'alexnet\.lr' must be a finite number, got nan$",
          "train", "alexnet", "cifar10")


@pytest.mark.e2e  # a stage process
def test_a_yaml_error_names_line_and_column(project):
    text = (project / "params.yaml").read_text().replace("seed: 42", "seed: [42", 1)
    (project / "params.yaml").write_text(text)
    result = run_stage(project, "stages.train", "alexnet", "cifar10")
    assert_one_line_error(result, r"^error: params\.yaml:\d+:\d+: not valid YAML: ")


@pytest.mark.e2e  # a stage process
def test_a_duplicate_key_is_refused_as_dvc_refuses_it(project):
    text = (project / "params.yaml").read_text()
    text = text.replace("  lr: 0.0005", "  lr: 0.0005\n  lr: 0.1", 1)
    (project / "params.yaml").write_text(text)
    result = run_stage(project, "stages.train", "alexnet", "cifar10")
    line = next(n for n, row in enumerate(text.splitlines(), 1) if row.startswith("  lr: 0.1"))
    assert_one_line_error(result, rf"^error: params\.yaml:{line}:3: duplicate key 'lr'$")


@pytest.mark.parametrize("grid, pattern", [
    ({"C": [1, -1]}, r"'transfer\.svm\.grid\.C' values must be numbers > 0; got -1"),
    ({"kernel": ["rbf", "cubic"]}, r"'transfer\.svm\.grid\.kernel' values must be one of "
                                   r"linear, rbf, poly, sigmoid; got 'cubic'"),
    ({"gamma": ["scale", 0]}, r"'transfer\.svm\.grid\.gamma' values must be scale, auto or "
                              r"numbers > 0; got 0"),
    ({"degree": [2.5]}, r"'transfer\.svm\.grid\.degree' values must be integers >= 1"),
    ({"C": [True]}, r"values must be numbers > 0; got True"),
])
def test_bad_values_inside_the_svm_grid(project, monkeypatch, grid, pattern):
    edit_params(project, {"transfer.svm.grid": grid})
    fails(project, monkeypatch, pattern, "svm")


@pytest.mark.parametrize("name", ["../secrets", "/etc", "a/b", "..", ".hidden"])
def test_transfer_dataset_stays_inside_the_project(project, monkeypatch, name):
    edit_params(project, {"transfer.dataset": name})
    fails(project, monkeypatch, r"'transfer\.dataset' must be the name of a download@<name> "
                                r"dataset", "transfer", "scratch")
    fails(project, monkeypatch, r"'transfer\.dataset' must be the name", "datasets")


def test_image_size_has_one_minimum(project, monkeypatch):
    edit_params(project, {"transfer.image_size": 16})
    fails(project, monkeypatch, r"'transfer\.image_size' must be >= 32, got 16", "datasets")
    fails(project, monkeypatch, r"'transfer\.image_size' must be >= 32, got 16", "transfer",
          "scratch")


def test_image_size_has_an_upper_bound():
    from stages.lib.core import params

    cfg = {"transfer": {"dataset": "x", "image_size": 1_000_000, "batch_size": 4,
                        "eval_batch_size": 4, "num_workers": 0, "resident_mb": 0,
                        "train_samples": "all", "val_samples": "all"}}
    with pytest.raises(StageError, match=r"'transfer\.image_size' must be <= 1024, got 1000000"):
        params.transfer_data(cfg)


# ---------------------------------------------------------------- damaged files

def test_a_damaged_features_file(project, monkeypatch):
    (project / "data/features").mkdir(parents=True)
    (project / "data/features/train.pt").write_bytes(b"not a torch file")
    (project / "data/features/val.pt").write_bytes(b"not a torch file")
    fails(project, monkeypatch, r"^data/features/train\.pt is not a features file \(.*\): run "
                                r"`dvc repro -f features`$", "svm")
    torch.save({"features": torch.zeros(3, 4)}, project / "data/features/train.pt")
    fails(project, monkeypatch, r"needs features \(N, D\), labels \(N,\), classes", "svm")


def test_a_damaged_model_file(tmp_path):
    path = tmp_path / "alexnet.pt"
    path.write_bytes(b"PK\x03\x04 broken zip")
    with pytest.raises(StageError, match=r"alexnet\.pt is not a model file of this pipeline"):
        inference.load_checkpoint(path, torch.device("cpu"))
    torch.save({"arch": "alexnet", "classes": ["a"] * 10, "state_dict": {"x": torch.ones(1)}},
               path)
    with pytest.raises(StageError, match=r"is not a model file of this pipeline \(Error\(s\) "
                                         r"in loading state_dict for AlexNet"):
        inference.load_checkpoint(path, torch.device("cpu"))


def mnist_mirror(mirror, dest, images):
    dest = shutil.copytree(mirror, dest)
    header = (2051).to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in images.shape)
    (dest / "mnist/train-images-idx3-ubyte.gz").write_bytes(
        gzip.compress(header + images.tobytes(), mtime=0))
    write_sha256sums(dest)
    return dest


@pytest.mark.parametrize("shape, pattern", [
    ((0, 28, 28), r"train-images-idx3-ubyte\.gz must hold 28x28 images, got shape \(0, 28, 28\)"),
    ((200, 20, 20), r"must hold 28x28 images, got shape \(200, 20, 20\)"),
])
def test_mnist_without_images_or_of_the_wrong_size(project, mirror, tmp_path, shape, pattern):
    bad = mnist_mirror(mirror, tmp_path / "m", np.zeros(shape, np.uint8))
    result = run_stage(project, "stages.download", "mnist", OUTS["mnist"], mirror=bad)
    assert_one_line_error(result, pattern)
    assert not (project / "data/raw/mnist").exists()


# ---------------------------------------------------------------- outputs

def test_a_nan_validation_loss_stops_training():
    class NanWhenEvaluating(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = torch.nn.Linear(4, 2)

        def forward(self, x):
            out = self.linear(x)
            return out if self.training else out * float("nan")

    model = NanWhenEvaluating()
    batches = [(torch.randn(8, 4), torch.randint(0, 2, (8,)))]
    with pytest.raises(StageError, match=r"^training diverged: the validation loss became nan "
                                         r"in epoch 1 \(try a lower 'x\.lr', now 0\.1, e\.g\. "
                                         r"0\.01\)$"):
        engine.fit(model, train_batches=lambda epoch: batches, val_batches=lambda: batches,
                   epochs=2, optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
                   device=torch.device("cpu"), amp_dtype=None, lr_key="x.lr")


def test_unwritable_outputs_stop_the_stage_before_training(project, monkeypatch):
    (project / "metrics").write_text("a file where the folder should be")
    fails(project, monkeypatch, r"^cannot write to metrics/: metrics is not a folder$", "train",
          "simple_cnn", "mnist")
    assert not (project / "models").exists()



def test_params_yaml_has_no_bare_nulls():
    """`dvc exp run -S` rewrites every null in params.yaml as an empty value, which makes noise
    in every experiment's diff: params.yaml spells "no value" as a word (same, none)."""
    import yaml

    from helpers import ROOT

    def nulls(node, path=""):
        if isinstance(node, dict):
            return [n for k, v in node.items() for n in nulls(v, f"{path}{k}.")]
        return [path.rstrip(".")] if node is None else []

    assert nulls(yaml.safe_load((ROOT / "params.yaml").read_text())) == []


@pytest.mark.parametrize("value, expected", [("same", None), (None, None), (0.01, 0.01)])
def test_a_word_stands_for_no_value(value, expected):
    from stages.lib.core.params import param

    assert param({"a": {"lr": value}}, "a.lr", float, above=0, unset="same") == expected


def test_the_word_is_named_in_the_error(project, monkeypatch):
    edit_params(project, {"transfer.finetune.backbone_lr": "lower"})
    fails(project, monkeypatch, r"'transfer\.finetune\.backbone_lr' must be a number or same, "
                                r"got 'lower'", "transfer", "finetune")


@pytest.mark.parametrize("key, hint", [
    ("alexnet.lrr", "alexnet.lr"),                     # `dvc exp run -S +alexnet.lrr=0.1`
    ("simple_cnn.augmnt", "simple_cnn.augment"),        # every model may augment
    ("transfer.finetune.augment.hflp", "transfer.finetune.augment.hflip"),
    ("tsne.perplexty", "tsne.perplexity"),
    ("alexnt.lr", "alexnet.lr"),
    ("download.mnist.urll", "download.mnist.url"),
    ("learning_rate", None),
])
def test_an_unknown_key_is_named_with_the_closest_known_one(key, hint):
    import yaml

    from helpers import ROOT
    from stages.lib.core import params
    from stages.lib.core.common import StageError

    data = yaml.safe_load((ROOT / "params.yaml").read_text())
    node, *parents = data, *key.split(".")[:-1]
    for part in parents:
        node = node.setdefault(part, {})
    node[key.rsplit(".", 1)[-1]] = 0.1
    expected = f"params.yaml: '{key}' is not a parameter of this pipeline" + \
        (f"; did you mean '{hint}'?" if hint else "")
    with pytest.raises(StageError) as error:
        params.check_known(data)
    assert str(error.value) == expected


def test_every_key_of_params_yaml_is_known_and_users_may_add_sources():
    """The project's own params.yaml passes; so does a dataset the README says how to add
    (download.<name>), and the SVM grid's own mapping."""
    import yaml

    from helpers import ROOT
    from stages.lib.core import params

    data = yaml.safe_load((ROOT / "params.yaml").read_text())
    params.check_known(data)
    data["download"]["flowers"] = {"format": "imagefolder", "url": "https://x/f.zip",
                                   "sha256": "none"}
    data["transfer"]["svm"]["grid"] = {"C": [0.1, 1], "kernel": ["rbf"]}
    params.check_known(data)
    assert "download.flowers.url" in params.known_keys(["flowers"])


def test_a_stage_refuses_an_unknown_key_before_any_work(project, monkeypatch):
    edit_params(project, {"alexnet.lrr": 0.1})
    fails(project, monkeypatch, r"^params\.yaml: 'alexnet\.lrr' is not a parameter of this "
                                r"pipeline; did you mean 'alexnet\.lr'\?$", "train", "alexnet",
          "cifar10")
