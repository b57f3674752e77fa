"""The README, run as written: every command of its shell and console blocks (and of the
docs' blocks, or the reason one cannot run here), in the order given, in a `git clone` of the
whole project (the whole dvc.yaml, its Makefile, its tools) on the tiny mirror.

Two passes over one clone: `offline`, a mirror without the ImageNet weights (the usual
offline case), then `weights`, the same mirror with stand-in (RANDOM) weights under the
ImageNet file name. Stand-ins, said here and in the output: the tiny mirror's made-up data,
the random weights, and the clone's params.yaml holding the smoke's sizes (smoke.yaml,
committed in the clone) so that `make repro` of the whole practical takes seconds.

Each command exits 0, or fails with the error line a console block of the README shows; none
prints a traceback; what the README says a command leaves alone (the workspace, the params,
`dvc exp list`) is compared before and after. A command the README gains that is neither
checked here nor listed in SKIPPED with its reason fails test_every_command_is_covered.

The notebook (the README's Colab badge) runs last in the offline pass, in the same clone.
Its tests that need the clone are e2e (they use the mirror); the coverage tests are not."""
import json
import os
import re
import shutil
import sys
import time

import nbformat
import pytest
import torch
import yaml
from nbclient import NotebookClient
from readme_commands import (
    PASSES,
    Step,
    clone_project,
    commands,
    differ_from_head,
    dvc_status,
    pattern,
    quoted_anywhere,
    shell,
    unchecked,
    workspace,
)

from helpers import ROOT, edit_params, run, stage_env
from tools import smoke

README = ROOT / "README.md"
DOCUMENTS = [README, *sorted((ROOT / "docs").glob("*.md"))]
RUN_FROM = [README]   # the documents whose commands this tier runs

WITHOUT_WEIGHTS = ["download@mnist", "download@cifar10", "download@hymenoptera", "datasets",
                   "train@simple_cnn", "train@alexnet", "tsne@simple_cnn", "tsne@alexnet",
                   "transfer@scratch"]
NEED_WEIGHTS = ["download@resnet50", "transfer@finetune", "transfer@finetune_aug",
                "features", "svm", "compare", "report"]   # in dvc.yaml's order
ACTIVATE = "source .venv/bin/activate"
ALEXNET = ["models/alexnet.pt", "metrics/alexnet.json", "plots/alexnet/curves.png",
           "metrics/tsne/alexnet/final.json", "plots/alexnet/tsne.csv"]

# Commands that cannot run in this tier, and why. A reason names what does test the command.
SKIPPED = {
    "make test": "the suite this tier is part of",
    # README, docs/sharing.md: model versions (tests/test_shared_runs.py, on a folder remote)
    "make release": "a DVC remote: tests/test_shared_runs.py releases on a folder remote",
    "git push origin --tags": "a hosted repository",
    "dvc artifacts get <repository URL> simple-cnn-mnist":
        "a placeholder URL: tests/test_shared_runs.py gets a released model",
    "dvc artifacts get <repository URL> simple-cnn-mnist@v0.0.1": "a placeholder URL",
    # docs/gpu.md: PyPI for the wheels
    "make gpu-bundle": "the network (PyPI): tests/test_gpu_check.py builds it with --no-wheels",
    "make gpu-rehearsal": "the network (PyPI): tests/test_gpu_check.py rehearses with "
                          "--link-packages",
    # docs/scale-out.md: several nodes
    "export PET_NNODES=2 PET_MASTER_ADDR=node0.example.org PET_MASTER_PORT=29500":
        "several nodes (tests/test_distributed.py runs two on loopback)",
    "PET_NODE_RANK=0 dvc repro train@alexnet": "several nodes (test_distributed.py)",
    "PET_NODE_RANK=1 python -m stages.train alexnet cifar10": "several nodes",
    "export PET_NNODES=$SLURM_NNODES PET_MASTER_PORT=29500": "Slurm",
    'export PET_MASTER_ADDR=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)':
        "Slurm",
    """srun bash -c 'export PET_NODE_RANK=$SLURM_NODEID; if [ "$SLURM_NODEID" = 0 ]
  then dvc repro train@alexnet; else python -m stages.train alexnet cifar10; fi'""": "Slurm",
    # docs/sharing.md: the queue and a remote
    "dvc exp run --queue -S alexnet.lr=0.0003,0.0005,0.001":
        "a sweep of whole-graph runs: tests/test_queue.py runs the queue on a sub-graph",
    "OMP_NUM_THREADS=1 dvc queue start -j 2": "the queue: tests/test_queue.py",
    "dvc queue status; dvc queue logs <task>": "the queue: tests/test_queue.py",
    "dvc exp apply <name>": "a placeholder name: tests/test_queue.py applies the best run",
    ".venv/bin/pip install -r requirements-test.txt": "the network (make test installs it)",
    "dvc remote add -d storage s3://my-bucket/image-classification":
        "a real S3: tests/test_s3_remote.py runs a local moto server",
    "dvc remote modify storage endpointurl https://minio.example.org:9000": "a real S3",
    "dvc remote modify --local storage access_key_id '<key id>'": "a real S3",
    "dvc remote modify --local storage secret_access_key '<secret>'": "a real S3",
    "dvc push --run-cache": "a real S3 (tests/test_s3_remote.py pushes to moto)",
    "dvc pull && dvc repro": "a real S3 (tests/test_s3_remote.py pulls from moto)",
}


def ran(step):
    """The stages DVC ran or restored from its run-cache."""
    return {line.split("'")[1] for line in step.output.splitlines()
            if line.startswith("Running stage") or " is cached - skipping run" in line}


def up_to_date(step):
    """The stages DVC ran, restored, or found unchanged."""
    return ran(step) | {line.split("'")[1] for line in step.output.splitlines()
                        if line.startswith("Stage '") and "didn't change" in line}


def computed(step):
    return {line.split("'")[1] for line in step.output.splitlines()
            if line.startswith("Running stage")}


def last_lines(step, prefix, n):
    lines = [line for line in step.output.splitlines() if line.startswith(prefix)]
    return lines[-n:]


# What each command the tier runs must do beyond the checks every command gets (exit status,
# error lines, no traceback): a function of (step, pass, tier), or None.
def check_smoke(step, name, tier):
    files = step.files
    assert step.before == step.after, "make smoke changed the workspace or dvc exp list"
    if name == "offline":
        done, skipped = last_lines(step, "smoke: ", 2)
        assert done.startswith(f"smoke: {len(WITHOUT_WEIGHTS)} of 16 stages in ")
        assert skipped == (f"smoke: skipped {', '.join(NEED_WEIGHTS)}: they need the ImageNet "
                           f"weights, and the mirror {tier.mirrors['offline']} has no "
                           "resnet50/resnet50-0676ba61.pth (README: Offline mirror)")
        # only what the smoke produced: no report, nothing of the stages it skipped
        assert not any(name.startswith("reports/") or "svm" in name or "finetune" in name
                       for name in files), sorted(files)
    else:
        done, report = last_lines(step, "smoke: ", 2)
        assert done.startswith("smoke: all 16 stages in ")
        assert report == "smoke: the report: smoke/reports/report.html"
        assert len(files["reports/report.html"]) > 1000 and "metrics/transfer/svm.json" in files
    assert json.loads(files["metrics/simple_cnn.json"])["best_epoch"] <= 2
    assert yaml.safe_load(files["params.yaml"])["alexnet"]["epochs"] == 2
    assert not any(name.startswith(("data/", "models/")) for name in files)


TRAINED = {"train@simple_cnn", "train@alexnet", "tsne@simple_cnn", "tsne@alexnet",
           "transfer@scratch", "transfer@finetune", "transfer@finetune_aug", "features", "svm",
           "compare", "report"}


def check_repro(step, name, tier):
    # the smoke ran the same params: no network is trained again, its runs are restored
    assert computed(step) & TRAINED == set(), step.output
    if name == "offline":
        assert up_to_date(step) == set(WITHOUT_WEIGHTS), step.output
        assert step.output.splitlines()[-1].startswith("repro: skipped download@resnet50, ")
    else:
        assert up_to_date(step) == set(WITHOUT_WEIGHTS + NEED_WEIGHTS), step.output


def check_one_model(step, name, tier):
    assert {"train@alexnet", "tsne@alexnet"} <= up_to_date(step), step.output
    assert computed(step) <= {"download@cifar10", "train@alexnet", "tsne@alexnet"}, step.output
    if name == "weights":   # the offline pass ran these params: restored, the same bytes
        assert computed(step) == set(), step.output
        assert step.files == tier.steps[("offline", tier.index_of(step))].files


def check_whole_graph(stages):
    def check(step, name, tier):
        if name == "weights":
            assert set(stages) <= up_to_date(step) and "report" in computed(step), step.output
    return check


def check_read_only(step, name, tier):
    assert step.before == step.after, "changed the workspace, params or dvc exp list"


def check_exps(step, name, tier):
    """The experiment's changed param, first, in 120 columns (its header on two lines)."""
    check_read_only(step, name, tier)
    lines = step.output.splitlines()
    assert max(len(line.rstrip()) for line in lines) <= 120, step.output
    header = [line for line in lines if "Experiment" in line or "alexnet." in line]
    assert "alexnet." in header[0] and "lr" in header[1].split(), step.output


def check_plots_show(step, name, tier):
    check_read_only(step, name, tier)
    assert (tier.project / "dvc_plots/index.html").stat().st_size > 1000


def check_only_alexnet(step, name, tier):
    """`--targets`: the experiment on AlexNet compared alone, the other models left out."""
    check_read_only(step, name, tier)
    assert "alexnet" in step.output and "simple_cnn" not in step.output, step.output


def check_typo(step, name, tier):
    """DVC refuses the key before anything runs: the params and experiments are as they were."""
    for what in ("params.yaml", "experiments"):
        assert step.before[what] == step.after[what], what


def check_restored(step, name, tier):
    assert step.after["differ from HEAD"] == [], "not the last commit's"
    assert step.after["dvc status"] == tier.committed_status[name], \
        "dvc status differs from the one at the last commit"


CHECKS = {
    "make smoke": check_smoke,
    "make repro": check_repro,
    ACTIVATE: None,
    'git add -A && git commit -m "Baseline results"': None,
    "dvc exp run tsne@alexnet -S alexnet.lr=0.001": check_one_model,
    "dvc exp run -S alexnet.lr=0.001": check_whole_graph(["train@alexnet", "report"]),
    "dvc exp run -S transfer.svm.C=10": check_whole_graph(["svm", "report"]),
    "make exps": check_exps,
    "dvc metrics diff": check_read_only,
    "dvc plots show": check_plots_show,
    "dvc plots diff main": check_read_only,
    "dvc metrics diff --targets metrics/alexnet.json metrics/tsne/alexnet": check_only_alexnet,
    "dvc plots diff main --targets plots/alexnet": check_read_only,
    "dvc exp run -S alexnet.lrr=0.001": check_typo,
    "dvc exp run -S +alexnet.lrr=0.001": None,
    "make restore": check_restored,
}
# compared before and after (costs a few DVC calls each)
WATCHED = {"make smoke", "make exps", "dvc metrics diff", "dvc plots show",
           "dvc plots diff main", "dvc metrics diff --targets metrics/alexnet.json "
           "metrics/tsne/alexnet", "dvc plots diff main --targets plots/alexnet",
           "dvc exp run -S alexnet.lrr=0.001", "make restore"}
# bash-block commands that fail without the weights, with a line a console block shows
OFFLINE_FAILS = {"dvc exp run -S alexnet.lr=0.001", "dvc exp run -S transfer.svm.C=10"}


def readme_steps():
    """(pass, index, command) for every command the tier runs, in order."""
    return [(name, i, command) for name in PASSES
            for i, command in enumerate(c for document in RUN_FROM for c in commands(document))
            if command.text not in SKIPPED and command.only in (None, name)]


class Tier:
    """The clone, its environment per pass, and every step's result."""

    def __init__(self, base, mirror):
        offline = shutil.copytree(mirror, base / "mirror-without-weights")
        shutil.rmtree(offline / "resnet50")
        self.mirrors = {"offline": offline, "weights": mirror}
        # as a user's shell: the project's .venv is not on PATH until activated
        env = stage_env(mirror)
        env["PATH"] = os.pathsep.join(p for p in env["PATH"].split(os.pathsep)
                                      if p != os.path.dirname(sys.executable))
        # nor inside a make: no MAKELEVEL (make's "Entering directory" lines), no MAKEFLAGS
        for name in ("VIRTUAL_ENV", "MAKELEVEL", "MAKEFLAGS", "MFLAGS", "MAKEOVERRIDES"):
            env.pop(name, None)
        self.base_env = env
        self.project = clone_project(base / "project", env)
        params = yaml.safe_load((self.project / "params.yaml").read_text())
        edit_params(self.project, smoke.expand(
            yaml.safe_load((ROOT / "smoke.yaml").read_text()), params))
        run(["git", "commit", "-q", "-am", "Stand-in: the smoke's sizes as params (tests)"],
            self.project, env)
        self.steps = {}
        self.committed_status = {}   # pass -> `dvc status` right after its git commit
        self.notebook = None

    def index_of(self, step):
        return next(i for (_, i), s in self.steps.items() if s is step)

    def env_for(self, name):
        return dict(self.base_env, DATASETS_MIRROR=str(self.mirrors[name]))

    def run_pass(self, name):
        self.env = self.env_for(name)
        activated = False
        for _, index, command in (s for s in readme_steps() if s[0] == name):
            text = command.text
            line = f"{ACTIVATE} && {text}" if activated and text != ACTIVATE else text
            before = workspace(self.project, self.env) if text in WATCHED else {}
            start = time.monotonic()
            status, output = shell(line, self.project, self.env)
            step = Step(command, status, output, time.monotonic() - start, before)
            if text in WATCHED:
                step.after = workspace(self.project, self.env)
            if text == "make smoke":   # what it copied, before the next pass replaces it
                step.files = {p.relative_to(self.project / "smoke").as_posix(): p.read_bytes()
                              for p in (self.project / "smoke").rglob("*") if p.is_file()}
            if text == "dvc exp run tsne@alexnet -S alexnet.lr=0.001":
                step.files = {path: (self.project / path).read_bytes() for path in ALEXNET}
            if text == ACTIVATE and status == 0:
                activated = True
            if "git commit" in text and status == 0:
                self.committed_status[name] = dvc_status(self.project, self.env)
            if text == "make restore":
                step.after["dvc status"] = dvc_status(self.project, self.env)
                step.after["differ from HEAD"] = differ_from_head(self.project, self.env)
            print(f"[{name}] {command.source} $ {text}: status {status}, "
                  f"{step.seconds:.0f} s", flush=True)
            with open(self.project.parent / "steps.log", "a") as log:   # for a failure's story
                log.write(f"\n===== [{name}] $ {text}: status {status}\n{output}")
            self.steps[(name, index)] = step

    def run_notebook(self):
        notebook = nbformat.read(self.project / "notebooks/quickstart.ipynb", as_version=4)
        env = self.env_for("offline")
        env["PATH"] = f"{self.project / '.venv/bin'}{os.pathsep}{env['PATH']}"
        # as on a fresh Colab runtime: git knows no identity (empty HOME, no system config)
        home = self.project.parent / "home"
        home.mkdir(exist_ok=True)
        fresh = {k: v for k, v in env.items()
                 if not k.startswith(("GIT_AUTHOR_", "GIT_COMMITTER_", "EMAIL"))}
        fresh.update(HOME=str(home), GIT_CONFIG_NOSYSTEM="1",
                     XDG_CONFIG_HOME=str(home / ".config"))
        NotebookClient(notebook, timeout=900, kernel_name="python3", allow_errors=True,
                       resources={"metadata": {"path": str(self.project / "notebooks")}}
                       ).execute(env=fresh)
        self.notebook = notebook


@pytest.fixture(scope="module")
def tier(tmp_path_factory, mirror):
    tier = Tier(tmp_path_factory.mktemp("readme"), mirror)
    print("stand-ins: the tiny mirror's made-up data, RANDOM weights as ImageNet's, the "
          "smoke's sizes as params", flush=True)
    tier.run_pass("offline")
    tier.run_notebook()
    tier.run_pass("weights")
    return tier


def test_every_command_is_covered():
    """Each command of a shell or console block is run by this tier or skipped with a reason;
    neither table names a command no document has."""
    missing, stale = unchecked(DOCUMENTS, CHECKS, SKIPPED)
    assert missing == [], f"README/docs commands neither checked nor listed in SKIPPED: {missing}"
    assert stale == [], f"entries of CHECKS/SKIPPED that no document has: {stale}"
    runs = {command.text for _, _, command in readme_steps()}
    assert runs <= set(CHECKS), sorted(runs - set(CHECKS))


def test_a_new_command_is_caught(tmp_path):
    page = tmp_path / "README.md"
    page.write_text("# x\n\n```bash\nmake smoke   # fine\nmake frobnicate\n```\n\n"
                    "```console offline\n$ make repro\nrepro: …\n```\n")
    assert unchecked([page], CHECKS, SKIPPED) == (["make frobnicate"], sorted(
        (set(CHECKS) | set(SKIPPED)) - {"make smoke", "make repro"}))
    [_, _, shown] = commands(page, root=tmp_path)
    assert shown.text == "make repro" and shown.shows == ("repro: …",) and shown.only == "offline"


@pytest.mark.parametrize("name, index, command", readme_steps(),
                         ids=[f"{n}-{i:02d}-{c.text}" for n, i, c in readme_steps()])
def test_readme_command(tier, name, index, command):
    step = tier.steps[(name, index)]
    where = f"{command.source} `{command.text}` ({name} pass)"
    assert "Traceback (most recent call last)" not in step.output, f"{where}:\n{step.output}"
    errors = [line for line in step.output.splitlines() if line.startswith("error:")]
    expected_to_fail = command.fails or (name == "offline" and command.text in OFFLINE_FAILS)
    if expected_to_fail:
        assert step.status != 0, f"{where} should fail:\n{step.output}"
        assert len(errors) == 1 or any(line.startswith("ERROR:") for line in command.shows), \
            f"{where}: not one error line:\n{step.output}"
        for line in errors:
            assert quoted_anywhere(line, DOCUMENTS), f"{where}: the README does not show " \
                f"this error line: {line}"
    else:
        assert step.status == 0, f"{where} failed ({step.status}):\n{step.output}"
    lines = step.output.splitlines()
    for shown in command.shows:
        assert any(pattern(shown).fullmatch(line) for line in lines), \
            f"{where}: the README shows `{shown}`, the command printed:\n{step.output}"
    check = CHECKS[command.text]
    if check:
        check(step, name, tier)


# -- the notebook (the README's Colab badge), run in the clone after the offline pass ----------

def cell_with(notebook, source):
    return next(cell for cell in notebook.cells
                if cell.cell_type == "code" and source in cell.source)


def text(cell):
    """The cell's printed output; a failed cell's error, as an AssertionError."""
    for out in cell.get("outputs", []):
        if out["output_type"] == "error":
            raise AssertionError(f"cell failed: {out['ename']}: {out['evalue']}\n"
                                 + "".join(o.get("text", "") for o in cell.outputs))
    return "".join(out.get("text", "") for out in cell.get("outputs", [])
                   if out["output_type"] == "stream")


def shown(cell, mime):
    return [out["data"][mime] for out in cell.get("outputs", [])
            if out["output_type"] == "display_data" and mime in out["data"]]


def test_notebook_every_code_cell_ran(tier):
    cells = [cell for cell in tier.notebook.cells if cell.cell_type == "code"]
    assert all(cell.execution_count for cell in cells)
    for cell in cells:
        text(cell)   # raises on a cell's error, with its output


def test_notebook_uses_the_checkout_it_is_in(tier):
    setup = text(cell_with(tier.notebook, "ROOT = checkout()"))
    assert setup.startswith(f"project: {tier.project}\n") and "git clone" not in setup


def test_notebook_runs_the_smoke(tier):
    output = text(cell_with(tier.notebook, "if FULL_RUN:"))
    assert output.strip().splitlines()[-1].startswith("smoke: skipped download@resnet50, ")


def test_notebook_shows_the_metrics_table(tier):
    [table] = shown(cell_with(tier.notebook, "dvc metrics show"), "text/markdown")
    assert table.startswith("| Path ")
    for name in ("smoke/metrics/simple_cnn.json", "smoke/metrics/tsne/alexnet/final.json",
                 "smoke/metrics/transfer/scratch.json", "best_accuracy", "probe"):
        assert name in table


def test_notebook_shows_the_main_plots(tier):
    images = shown(cell_with(tier.notebook, "MAIN_PLOTS = "), "image/png")
    assert len(images) == 7   # the weights-free stages' curves, confusions and t-SNEs


def test_notebook_says_why_there_is_no_report(tier):
    assert text(cell_with(tier.notebook, "report.md")).startswith("No report: it needs the "
                                                                   "ImageNet")


# -- adding a model and a strategy by docs/design.md's steps, in the clone the README left ----

LENET = '''"""LeNet-5 for 28x28x1 images (a model added by docs/design.md's steps)."""
from torch import nn

EMBEDDING = "84-d dense layer"


class LeNet5(nn.Module):
    def __init__(self, num_classes=10):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 6, 5, padding=2), nn.Tanh(), nn.AvgPool2d(2),
            nn.Conv2d(6, 16, 5), nn.Tanh(), nn.AvgPool2d(2), nn.Flatten(),
            nn.Linear(400, 120), nn.Tanh(), nn.Linear(120, 84), nn.Tanh())
        self.head = nn.Linear(84, num_classes)

    def embed(self, x):
        return self.features(x)

    def forward(self, x):
        return self.head(self.embed(x))


def build(num_classes):
    return LeNet5(num_classes)
'''
EXTENSION_PARAMS = {
    "models.lenet": "mnist",
    "lenet": {"epochs": 1, "batch_size": 32, "eval_batch_size": 100, "lr": 0.002,
              "optimizer": "adam", "momentum": 0.9, "weight_decay": 0.0, "train_samples": "all",
              "val_samples": "all"},
    "strategies.frozen": "data/weights/resnet50.pth",
    "transfer.frozen": {"train": "head", "epochs": 1, "lr": 0.01, "backbone_lr": "same",
                        "optimizer": "sgd", "momentum": 0.9, "weight_decay": 0.0001,
                        "scheduler": "none", "step_size": 7, "gamma": 0.1,
                        "augment": {"random_crop": False, "crop_scale_min": 0.08,
                                    "hflip": False, "color_jitter": 0.0, "rotation": 0.0}},
}
EXTENSION_WORDS = {"en": ("LeNet-5", "ImageNet backbone frozen, new head trained"),
                   "es": ("LeNet-5", "red de ImageNet congelada, capa final nueva entrenada")}


def test_a_model_and_a_strategy_added_by_the_design_documents_steps(tier):
    """docs/design.md, "Adding things": a LeNet-5 is its module and a params section (its
    name in the wording, optional); a strategy that trains the new head only on the frozen
    ImageNet backbone is a params section (and its wording). Nothing else is edited: dvc.yaml's
    foreach lists take them from params.yaml, the report and `dvc metrics show` show them."""
    project, env = tier.project, tier.env_for("weights")
    assert differ_from_head(project, env) == [], "the README left changes behind"
    (project / "stages/lib/models/lenet.py").write_text(LENET)
    edit_params(project, EXTENSION_PARAMS)
    for language, (model, strategy) in EXTENSION_WORDS.items():
        path = project / f"stages/templates/wording/{language}.yaml"
        words = yaml.safe_load(path.read_text())
        words["models"]["lenet"], words["strategies"]["frozen"] = model, strategy
        path.write_text(yaml.safe_dump(words, sort_keys=False, allow_unicode=True))
    changed = run(["git", "status", "--porcelain"], project, env).stdout.split("\n")
    assert sorted(line[3:] for line in changed if line) == [
        "params.yaml", "stages/lib/models/lenet.py", "stages/templates/wording/en.yaml",
        "stages/templates/wording/es.yaml"]

    status, output = shell(f"{ACTIVATE} && dvc repro", project, env)
    assert status == 0, output
    ran = set(re.findall(r"Running stage '([^']+)'", output))
    assert ran == {"train@lenet", "tsne@lenet", "transfer@frozen", "compare", "report"}, output

    metrics = json.loads(shell(f"{ACTIVATE} && dvc metrics show --json", project, env)[1])
    shown = next(iter(metrics.values()))["data"]
    for path in ("metrics/lenet.json", "metrics/tsne/lenet/final.json",
                 "metrics/transfer/frozen.json", "metrics/tsne/transfer/frozen.json"):
        assert "accuracy" in shown[path]["data"] or "probe" in shown[path]["data"], path
    report = (project / "reports/report.md").read_text()
    assert "## LeNet-5 on MNIST" in report and "(figures/lenet_tsne_final.png)" in report
    # the tests' weights are random: the report says so at its top and in every name they affect
    assert "| ImageNet backbone frozen, new head trained [stand-in weights] |" in report
    read_first = report.split("## Run")[0]
    assert "The ResNet-50 weights are **not** torchvision's ImageNet weights" in read_first
    assert "ImageNet backbone frozen, new head trained [stand-in weights]" in read_first
    assert "transfer_confusion.png" in report and "frozen" in (
        project / "reports/transfer_accuracy.csv").read_text()

    # head only: the backbone, BatchNorm statistics included, is ImageNet's to the bit
    trained = torch.load(project / "models/transfer/frozen.pt", weights_only=True)["state_dict"]
    imagenet = torch.load(project / "data/weights/resnet50.pth", weights_only=True)
    backbone = {k.removeprefix("backbone."): v for k, v in trained.items()
                if k.startswith("backbone.")}
    assert backbone and all(torch.equal(v, imagenet[k]) for k, v in backbone.items())
    assert not torch.equal(trained["head.weight"], torch.zeros_like(trained["head.weight"]))
