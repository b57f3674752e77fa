"""Reading params.yaml (stages/lib/core/params.load): bounded before it is parsed, one line for
each way a file can be wrong, and every value that only a late stage reads checked by the
first one (hardening round 4). The keys and values of each section: test_bad_input.py."""
import sys

import pytest
import yaml

import helpers
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
