"""Reading params.yaml (stages/lib/core/params.load): bounded before it is parsed, one line for
each way a file can be wrong, and every value that only a late stage reads checked by the
first one; each section's values and keys, one line for each that is wrong, whether a stage
or params.load meets it."""
import sys

import pytest
import yaml

import helpers
from helpers import assert_one_line_error, edit_params, fails, run_stage
from stages.lib.core import params
from stages.lib.core.common import StageError

ROOT = helpers.ROOT


def write(tmp_path, text):
    path = tmp_path / "params.yaml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


def the_project(**changes):
    data = yaml.safe_load((ROOT / "params.yaml").read_text())
    for key, value in changes.items():
        *parents, last = key.split(".")
        node = data
        for part in parents:
            node = node[part]
        node[last] = value
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)


def test_an_alias_bomb_is_refused_before_it_is_expanded(tmp_path):
    """Twelve levels of ten aliases each: 10^12 leaves for whoever expands it (DVC ran a
    minute, then aborted); refused at the 101st alias, before any of it is built."""
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 13)]
    path = write(tmp_path, the_project() + "\n".join(lines) + "\n")
    with pytest.raises(StageError, match=r"params\.yaml:\d+:\d+: more than 100 YAML aliases "
                                         r"\(\*name\): write the values out"):
        params.load(path)


def test_a_few_aliases_are_fine(tmp_path):
    text = the_project().replace("  batch_size: 64\n", "  batch_size: &batch 64\n", 1)
    text = text.replace("  batch_size: 128\n", "  batch_size: *batch\n", 1)
    assert params.load(write(tmp_path, text))["alexnet"]["batch_size"] == 64


def test_a_huge_params_file_is_refused_unread(tmp_path):
    path = write(tmp_path, the_project() + "# " + "x" * (2 << 20) + "\n")
    with pytest.raises(StageError, match=r"params\.yaml is 2,09\d,\d{3} bytes, more than the "
                                         r"1,048,576 a settings file may have"):
        params.load(path)


def test_a_byte_that_is_not_utf8_is_one_line_naming_its_line(tmp_path):
    text = the_project().encode()
    lines = text.split(b"\n")
    lines[2] += b" # caf\xe9"   # Latin-1
    with pytest.raises(StageError, match=r"params\.yaml:3: not UTF-8 text \(byte 0xe9\): save it "
                                         r"as UTF-8"):
        params.load(write(tmp_path, b"\n".join(lines)))


def test_a_report_language_without_wording_stops_the_first_stage(tmp_path):
    with pytest.raises(StageError, match=r"'report\.language' must be one of en, es; got 'fr'"):
        params.load(write(tmp_path, the_project(**{"report.language": "fr"})))


@pytest.mark.e2e   # a stage process in a copy of the project
def test_a_stage_run_directly_says_it_in_one_line(tmp_path):
    """The first stage DVC runs (download@mnist) stops on it, before any work: no traceback."""
    project = helpers.copy_project(tmp_path / "project")
    (project / "params.yaml").write_bytes(the_project().encode() + b"# \xff\n")
    result = helpers.run([sys.executable, "-m", "stages.download", "mnist", "data/raw/mnist"],
                         project, helpers.stage_env(), check=False)
    helpers.assert_one_line_error(result, r"params\.yaml:\d+: not UTF-8 text \(byte 0xff\)")
    assert not (project / "data").exists()


def test_make_repro_checks_params_before_dvc_reads_them(tmp_path, monkeypatch, capsys):
    from tools import repro

    (tmp_path / "params.yaml").write_text(the_project(**{"report.language": "fr"}))
    monkeypatch.setattr(repro, "ROOT", tmp_path)
    monkeypatch.setattr(repro.subprocess, "run", lambda *a, **k: pytest.fail("DVC ran"))
    assert repro.main([]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("repro: error: params.yaml: 'report.language' "
                                                   "must be one of en, es; got 'fr'")


@pytest.mark.parametrize("key, value, said", [
    ("alexnet.lr", -1, r"'alexnet\.lr' must be > 0"),
    ("transfer.svm.C", 0, r"'transfer\.svm\.C' must be > 0"),
    ("transfer.finetune.train", "some", r"'transfer\.finetune\.train' must be one of all, head"),
    ("tsne.probe_folds", 1, r"'tsne\.probe_folds' must be >= 2"),
    ("distributed.nproc_per_node", 0, r"'distributed\.nproc_per_node' must be an integer"),
])
def test_a_value_only_a_later_stage_reads_stops_the_first(tmp_path, key, value, said):
    """download@mnist runs first and reads none of these; the stage that does would stop on
    them hours later, after every download and training before it."""
    with pytest.raises(StageError, match=said):
        params.load(write(tmp_path, the_project(**{key: value})))


def test_a_partial_params_file_is_checked_for_what_it_holds(tmp_path):
    """A section that is not there is left to the stages that read it."""
    data = params.load(write(tmp_path, yaml.safe_dump(
        {"report": {"language": "es", "author": "none"}, "seed": 1, "device": "cpu",
         "precision": "fp32", "deterministic": True})))
    assert data["report"]["language"] == "es"


# ---------------------------------------------------------------- each section's values

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
    from stages.lib.core.param_keys import param

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
