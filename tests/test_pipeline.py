"""End to end: `dvc repro` of the whole pipeline in a temporary git repo, on the tiny mirror,
with tiny params. One run serves all the tests of this module: first with a mirror that lacks
the ImageNet weights (`--keep-going` runs all the rest), then with the weights added."""
import json
import shutil
import sys

import pytest
import yaml

from helpers import copy_project, edit_params, run, stage_env, wait_for_state
from stages.lib import figures, judgements
from stages.lib.records import PRACTICAL as THE_PRACTICAL
from stages.lib.wording import Language

english = Language("en")
PRACTICAL = THE_PRACTICAL["transfer"]["accuracy"]

TINY = {
    "download.retries": 1,
    "simple_cnn.epochs": 2, "simple_cnn.batch_size": 32, "simple_cnn.eval_batch_size": 64,
    "alexnet.epochs": 3, "alexnet.batch_size": 32, "alexnet.eval_batch_size": 64,
    "tsne.points": 60, "tsne.perplexity": 5, "tsne.silhouette_points": 50,
    "tsne.probe_folds": 2,
    "transfer.image_size": 32, "transfer.batch_size": 4, "transfer.eval_batch_size": 8,
    "transfer.num_workers": 0,
    "transfer.scratch.epochs": 2, "transfer.finetune.epochs": 1,
    "transfer.finetune_aug.epochs": 1, "transfer.svm.cv": 2,
}

pytestmark = pytest.mark.e2e


def dvc(project, *args, env, check=True):
    return run([sys.executable, "-m", "dvc", *args], project, env, check=check)


def init_repo(project, env):
    run(["git", "init", "-q"], project, env)
    run(["git", "add", "-A"], project, env)
    run(["git", "commit", "-q", "-m", "pipeline"], project, env)


WITHOUT_WEIGHTS = {"download@resnet50", "features", "svm", "transfer@finetune",
                   "transfer@finetune_aug", "compare", "report"}


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory, mirror):
    base = tmp_path_factory.mktemp("e2e")
    partial = shutil.copytree(mirror, base / "mirror-without-weights")
    shutil.rmtree(partial / "resnet50")
    project = copy_project(base / "project")
    edit_params(project, TINY)
    init_repo(project, stage_env(mirror))
    first = dvc(project, "repro", "--keep-going", env=stage_env(partial), check=False)
    env = stage_env(mirror)
    second = dvc(project, "repro", env=env)
    return project, env, (first, second)


def test_keep_going_without_weights_runs_everything_else(pipeline):
    project, env, (first, second) = pipeline
    assert first.returncode != 0
    output = first.stdout + first.stderr
    assert "error: mirror" in output and "is missing resnet50/resnet50-0676ba61.pth" in output
    ran_first = {line.split("'")[1] for line in first.stdout.splitlines()
                 if line.startswith("Running stage")}
    ran_second = {line.split("'")[1] for line in second.stdout.splitlines()
                  if line.startswith("Running stage")}
    assert ran_first & WITHOUT_WEIGHTS == {"download@resnet50"}  # tried, failed
    assert {"datasets", "train@simple_cnn", "train@alexnet", "tsne@simple_cnn",
            "tsne@alexnet", "transfer@scratch"} <= ran_first
    assert ran_second == WITHOUT_WEIGHTS  # with the weights, only what needed them
    assert len(ran_first | ran_second) == 16  # every stage ran once


def test_repro_writes_dataset_table(pipeline):
    project, _, _ = pipeline
    table = json.loads((project / "metrics/datasets.json").read_text())
    assert {name: {s: row["samples"] for s, row in splits.items()}
            for name, splits in table.items()} == {
        "mnist": {"train": 200, "val": 100}, "cifar10": {"train": 250, "val": 100},
        "hymenoptera": {"train": 16, "val": 10}}
    assert table["hymenoptera"]["train"]["height"] == 32  # transfer.image_size


def test_second_repro_has_nothing_to_do(pipeline):
    project, env, _ = pipeline
    result = dvc(project, "repro", env=env)
    assert "Running stage" not in result.stdout, result.stdout
    status = dvc(project, "status", env=env)
    assert "up to date" in status.stdout, status.stdout


def read(project, path):
    return json.loads((project / path).read_text())


def test_training_metrics_and_plots(pipeline):
    project, _, _ = pipeline
    simple = read(project, "metrics/simple_cnn.json")
    # the headline keys of every trained model; the details are beside the confusion data
    assert set(simple) == {"accuracy", "best_accuracy", "best_epoch"}
    assert 1 <= simple["best_epoch"] <= 2 and 0 <= simple["accuracy"] <= 1
    assert simple["best_accuracy"] >= simple["accuracy"]
    details = read(project, "plots/simple_cnn/evaluation.json")
    assert len(details["per_class_accuracy"]) == 10 and details["val_samples"] == 100
    assert details["params"] == 813_802 and details["params_no_bias"] == 813_600
    assert read(project, "plots/alexnet/evaluation.json")["params"] == 6_199_498
    assert read(project, "plots/alexnet/evaluation.json")["epochs"] == 3
    for model in ("simple_cnn", "alexnet"):
        rows = (project / f"plots/{model}/confusion.csv").read_text().splitlines()
        assert rows[0] == "actual,predicted,count" and len(rows) == 1 + 10 * 10
        assert sum(int(row.rsplit(",", 1)[1]) for row in rows[1:]) == 100   # the val images
        loss = (project / f"plots/{model}/live/plots/metrics/val/loss.tsv").read_text()
        assert loss.splitlines()[0].split("\t") == ["step", "loss"]
        # dvclive's steps are the epochs, counted from 1 as in the metrics
        epochs = read(project, f"plots/{model}/evaluation.json")["epochs"]
        assert [int(row.split("\t")[0]) for row in loss.splitlines()[1:]] == \
            list(range(1, epochs + 1))
        for png in ("curves", "confusion", "tsne_intermediate", "tsne_final"):
            assert (project / f"plots/{model}/{png}.png").stat().st_size > 1000
        for layer in ("intermediate", "final"):
            assert set(read(project, f"metrics/tsne/{model}/{layer}.json")) == \
                {"silhouette", "probe"}
        tsne = read(project, f"plots/{model}/tsne.json")
        assert tsne["intermediate"]["points"] == 60
        assert tsne["intermediate"]["dimensions"] == (128 if model == "simple_cnn" else 2048)
        assert tsne["final"]["dimensions"] == 10
        coords = (project / f"plots/{model}/tsne.csv").read_text().splitlines()
        assert coords[0] == "layer,index,x,y,label,class" and len(coords) == 1 + 2 * 60
        assert (project / f"models/{model}.pt").exists()
    assert not list((project / ".dvc/tmp/checkpoints").iterdir())   # finished runs keep none


def test_every_stage_is_in_the_run_cache(pipeline):
    """No stage has an output that keeps DVC from saving its run (a `persist` output, or an
    uncached one that is no metric or plot): each of the 16 has an entry in the run-cache."""
    project, _, _ = pipeline
    runs = list((project / ".dvc/cache/runs").glob("*/*"))
    assert len(runs) == 16


def test_metrics_show_is_narrow(pipeline):
    """The same key for the same idea in every metrics file: `dvc metrics show` of the whole
    pipeline fits 200 columns."""
    project, env, _ = pipeline
    table = dvc(project, "metrics", "show", env=env).stdout
    header = table.splitlines()[0].split()
    assert header == ["Path", "accuracy", "best_accuracy", "best_epoch", "probe",
                      "silhouette"]
    assert max(map(len, table.splitlines())) <= 200, table


def test_transfer_metrics_side_by_side(pipeline):
    project, env, _ = pipeline
    for strategy in ("scratch", "svm", "finetune", "finetune_aug"):
        metrics = read(project, f"metrics/transfer/{strategy}.json")
        assert 0 <= metrics["accuracy"] <= 1
        assert set(metrics) == ({"accuracy"} if strategy == "svm" else
                                {"accuracy", "best_accuracy", "best_epoch"})
        details = read(project, f"plots/transfer/{strategy}/evaluation.json")
        assert set(details["per_class_accuracy"]) == {"ants", "bees"}
    shown = json.loads(dvc(project, "metrics", "show", "--json", env=env).stdout)
    files = shown[""]["data"] if "" in shown else next(iter(shown.values()))["data"]
    for strategy in ("scratch", "svm", "finetune", "finetune_aug"):
        assert "accuracy" in files[f"metrics/transfer/{strategy}.json"]["data"]
    separability = read(project, "plots/transfer/tsne.json")
    settings = separability.pop("settings")
    assert settings["perplexity"] == 5 and settings["probe_folds"] == 2
    assert set(separability) == {"scratch", "svm", "finetune", "finetune_aug"}
    assert all(v["dimensions"] == 2048 and v["points"] == 10 for v in separability.values())
    features = __import__("torch").load(project / "data/features/train.pt", weights_only=True)
    assert features["features"].shape == (16, 2048) and features["classes"] == ["ants", "bees"]
    bars = (project / "reports/transfer_accuracy.csv").read_text().splitlines()
    assert bars[0] == "strategy,accuracy,best_accuracy" and len(bars) == 5


def test_every_declared_plot_renders(pipeline):
    project, env, _ = pipeline
    result = dvc(project, "plots", "show", "--json", env=env)
    shown = json.loads(result.stdout)
    assert set(shown) == {"data"}, shown.get("errors")  # no "errors" entry
    declared = yaml.safe_load((project / "dvc.yaml").read_text())["plots"]
    names = [p if isinstance(p, str) else next(iter(p)) for p in declared]
    drawn = {name for name, content in shown["data"].items() if content}
    assert set(names) <= drawn   # the charts that combine stages
    for model in ("simple_cnn", "alexnet", "transfer/scratch", "transfer/finetune_aug"):
        assert {f"plots/{model}/curves.png", f"plots/{model}/confusion.csv",
                f"plots/{model}/live/plots/metrics/val/accuracy.tsv"} <= drawn
    confusion = shown["data"]["plots/alexnet/confusion.csv"][0]["content"]
    assert confusion["description"].startswith("DVC's `confusion` template")   # counted cells
    assert '"field": "predicted"' in json.dumps(confusion)
    # the records declared as plots to keep them in git hold no table: nothing is drawn
    assert {name for name in shown["data"] if name not in drawn} == {
        "metrics/datasets.json", "models/simple_cnn.run.json", "models/alexnet.run.json",
        "plots/simple_cnn/evaluation.json", "plots/alexnet/evaluation.json",
        "plots/simple_cnn/tsne.json", "plots/alexnet/tsne.json", "plots/transfer/tsne.json",
        "plots/simple_cnn/live/metrics.json", "plots/alexnet/live/metrics.json",
        "plots/transfer/svm/evaluation.json",
        *[f"metrics/sources/{d}.json" for d in ("mnist", "cifar10", "hymenoptera", "resnet50")],
        *[f"models/transfer/{s}.run.json" for s in ("scratch", "finetune", "finetune_aug")],
        *[f"plots/transfer/{s}/{f}.json" for s in ("scratch", "finetune", "finetune_aug")
          for f in ("evaluation", "live/metrics")]}


def test_same_params_same_metrics(pipeline):
    project, env, _ = pipeline
    before = {p: (project / p).read_text() for p in ("metrics/simple_cnn.json",
                                                     "metrics/tsne/simple_cnn/final.json")}
    dvc(project, "repro", "--force", "--single-item", "train@simple_cnn", env=env)
    dvc(project, "repro", "--force", "--single-item", "tsne@simple_cnn", env=env)
    assert {p: (project / p).read_text() for p in before} == before


def pct(x):
    return f"{100 * x:.2f} %"


def test_report_numbers_come_from_the_metrics(pipeline):
    project, _, _ = pipeline
    report = (project / "reports/report.md").read_text()
    simple, alexnet = ({**read(project, f"metrics/{m}.json"),
                        **read(project, f"plots/{m}/evaluation.json")}
                       for m in ("simple_cnn", "alexnet"))
    datasets = read(project, "metrics/datasets.json")
    assert "| training | 28 | 28 | 1 | 200 | 10 |" in report
    assert "| validation | 32 | 32 | 3 | 100 | 10 |" in report
    assert "Trainable parameters: **813,802** (813,600 without the bias terms)." in report
    assert "Trainable parameters: **6,199,498** (6,194,704 without the bias terms)." in report
    for name, m in (("simple_cnn", simple), ("alexnet", alexnet)):
        correct, images = counted(project / f"plots/{name}/confusion.csv")
        assert m["accuracy"] == correct / images   # one model behind the number and the matrix
        assert (f"Validation accuracy of the final model, after epoch {m['epochs']}: "
                f"**{pct(m['accuracy'])}** ({correct:,} of {images:,} images classified "
                "correctly).") in report
        assert (f"the best validation accuracy, {pct(m['best_accuracy'])}, was reached at "
                f"epoch {m['best_epoch']}.") in report
        # the answer to "high bias or overfitting?" is the rules' verdict on these very files
        classes, matrix = figures.read_confusion(project / f"plots/{name}/confusion.csv")
        curves = figures.read_curves(project / f"plots/{name}/live")
        verdict = judgements.diagnosis(
            judgements.learned(classes, matrix, curves[-1]["val_loss"])["status"],
            judgements.fit(curves, m["best_epoch"]))
        assert f"**{english.say(f'diagnosis.{verdict}')}**" in report.split(
            "## 1.2")[0 if name == "simple_cnn" else 1], name
    for model in ("simple_cnn", "alexnet"):
        details = read(project, f"plots/{model}/tsne.json")
        for layer in ("intermediate", "final"):
            m = {**read(project, f"metrics/tsne/{model}/{layer}.json"), **details[layer]}
            assert (f"| {m['dimensions']} | {m['silhouette']:.3f} | "
                    f"{pct(m['probe'])} |").replace("-", "\u2212") in report
    assert "Training: 3 epochs, batch size 32, Adam with learning rate 0.0005." in report
    # the tests' weights are random: what starts from them says so (the tiny mirror's made-up
    # datasets were accepted unverified too, and the report says that first)
    read_first = report.split("## Run")[0]
    assert "The ResNet-50 weights are **not** torchvision's ImageNet weights" in read_first
    assert "**MNIST** was accepted without verification" in read_first
    names = {"scratch": "trained from scratch",
             "svm": "pre-trained features + SVM [stand-in weights]",
             "finetune": "fine-tuning [stand-in weights]",
             "finetune_aug": "fine-tuning with data augmentation [stand-in weights]"}
    for strategy, name in names.items():
        m = read(project, f"metrics/transfer/{strategy}.json")
        sep = read(project, f"metrics/tsne/transfer/{strategy}.json")
        best = f"{pct(m['best_accuracy'])} ({m['best_epoch']})" if "best_epoch" in m else "—"
        correct, images = counted(project / f"plots/transfer/{strategy}/confusion.csv")
        assert m["accuracy"] == correct / images
        silhouette = f"{sep['silhouette']:.3f}".replace("-", "\u2212")   # a true minus
        assert (f"| {name} | {pct(m['accuracy'])} | {correct} / {images} | {best} | "
                f"{100 * PRACTICAL[strategy]:.1f} % | {silhouette} | "
                f"{pct(sep['probe'])} |") in report
    hymenoptera = datasets["hymenoptera"]
    assert (f"{hymenoptera['train']['samples']} training and {hymenoptera['val']['samples']} "
            "validation images of 2 classes (ants, bees), resized to 32×32 pixels") in report
    links = __import__("re").findall(r"!\[[^\]]+\]\(([^)]+)\)", report)
    assert len(links) == 12
    for link in links:
        assert (project / "reports" / link).is_file(), link
    html = (project / "reports/report.html").read_text()
    assert "<table>" in html and "figures/" not in html   # one file, its figures embedded
    run_record = read(project, "models/simple_cnn.run.json")
    threads = english.say("threads", n=run_record["cpu_threads"])   # "1 thread", "2 threads"
    assert f"({threads} of {run_record['cpu']});" in report


def test_report_in_spanish(pipeline):
    project, env, _ = pipeline
    original = (project / "params.yaml").read_text()
    try:
        edit_params(project, {"report.language": "es"})
        dvc(project, "repro", "report", env=env)
        report = (project / "reports/report.md").read_text()
        simple = read(project, "metrics/simple_cnn.json")
        assert report.startswith("# Clasificación de imágenes")
        assert ("Parámetros entrenables: **813.802** (813.600 sin contar los términos de "
                "sesgo, *bias*).") in report
        final = f"{100 * simple['accuracy']:.2f} %".replace(".", ",")
        assert ("Exactitud (*accuracy*; «precisión» en el enunciado) de validación del modelo "
                f"final, tras la época 3: **{final}**") in report
        assert "[pesos sustitutos]" in report and "stand-in" not in report
        assert "<html lang=\"es\">" in (project / "reports/report.html").read_text()
        threads = Language("es").say("threads", n=read(project, "models/simple_cnn.run.json")
                                     ["cpu_threads"])
        assert f"({threads} de " in report and " thread" not in report
    finally:
        (project / "params.yaml").write_text(original)
        dvc(project, "repro", "report", env=env)


def counted(confusion_csv):
    """(right answers, images) of a confusion.csv."""
    import csv

    with open(confusion_csv, newline="") as f:
        rows = list(csv.DictReader(f))
    return (sum(int(r["count"]) for r in rows if r["actual"] == r["predicted"]),
            sum(int(r["count"]) for r in rows))


def test_spanish_figures_of_a_whole_run_have_no_english_word(pipeline, tmp_path, monkeypatch):
    """The report stage, run on a copy of the whole pipeline's outputs in Spanish: every text
    in every figure it draws (titles, axes, ticks, legends, class names) is Spanish."""
    from helpers import figure_texts
    from stages import report

    project, _, _ = pipeline
    copy = shutil.copytree(project, tmp_path / "copy", ignore=shutil.ignore_patterns(".git"))
    edit_params(copy, {"report.language": "es"})
    texts = figure_texts(monkeypatch)
    monkeypatch.chdir(copy)
    report.main([])
    assert len(texts) == 12
    everything = " ".join(t for found in texts.values() for t in found).lower()
    for english in ("epoch", "loss", "accuracy", "train", "validation", "label", "ants",
                    "bees", "airplane", "bird", "truck", "silhouette", "linear", "fine-tun",
                    "scratch", "features", "images", "true", "predicted"):
        assert english not in everything, english
    for spanish in ("época", "pérdida", "exactitud", "entrenamiento", "validación",
                    "hormigas", "abejas", "clase real", "clase predicha", "ajuste fino"):
        assert spanish in everything, spanish


def test_names_from_data_are_text_in_the_report(pipeline, tmp_path):
    """A class folder named like an HTML tag or a Markdown link ends up as text in report.html,
    never as markup (stored XSS through a dataset archive)."""
    project, env, _ = pipeline
    copy = shutil.copytree(project, tmp_path / "copy", ignore=shutil.ignore_patterns(".git"))
    hostile = ["<img src=x onerror=alert(1)>", "[x](javascript:alert(1))"]
    table = read(copy, "metrics/datasets.json")
    for split in table["hymenoptera"].values():
        split["class_names"] = hostile
    (copy / "metrics/datasets.json").write_text(json.dumps(table))
    alexnet = read(copy, "plots/alexnet/evaluation.json")
    alexnet["top_confusions"] = {
        "1": {"true": hostile[0], "predicted": "<script>alert(2)</script>", "count": 3},
        "2": {"true": "a", "predicted": hostile[1], "count": 1}}
    (copy / "plots/alexnet/evaluation.json").write_text(json.dumps(alexnet))
    run([sys.executable, "-m", "stages.report"], copy, env)
    html = (copy / "reports/report.html").read_text()
    assert "<img src=x" not in html and "<script>" not in html
    assert 'href="javascript' not in html
    assert "&#60;img src=x onerror=alert(1)&#62;" in html   # shown as written


def test_dvc_killed_mid_training_resumes_on_the_next_repro(pipeline, tmp_path):
    """SIGKILL to `dvc repro` once epoch 1's state is on disk: the stage dies with it (no
    orphan training beside the next run), its checkpoint survives outside DVC's outputs, and the
    next `dvc repro -f` (forced: else DVC restores the finished run of the same params) resumes
    and ends with the bytes of the uninterrupted run."""
    import signal
    import subprocess

    project, env, _ = pipeline
    copy = shutil.copytree(project, tmp_path / "copy")
    outputs = ["metrics/alexnet.json", "models/alexnet.pt", "plots/alexnet/confusion.csv",
               "plots/alexnet/live/plots/metrics/val/loss.tsv"]
    expected = {name: (project / name).read_bytes() for name in outputs}
    with open(tmp_path / "dvc.log", "w") as log:
        process = subprocess.Popen([sys.executable, "-m", "dvc", "repro", "-f", "train@alexnet"],
                                   cwd=copy, env=env, stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    wait_for_state(copy, "alexnet", process)   # epoch 1's state is on disk: kill in epoch 2
    lock = copy / ".dvc/tmp/stage-locks/train@alexnet.lock"
    stage = int(lock.read_text())   # the training stage's pid, which holds the lock
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=60)
    import psutil

    try:   # the stage unwinds once its parents are gone
        psutil.Process(stage).wait(timeout=60)
    except psutil.NoSuchProcess:
        pass
    except psutil.TimeoutExpired:
        raise AssertionError("the training stage outlived the killed dvc") from None
    result = dvc(copy, "repro", "-f", "-s", "train@alexnet", env=env)
    assert "resuming after epoch " in result.stdout, result.stdout
    assert {name: (copy / name).read_bytes() for name in outputs} == expected
    assert "train@alexnet" not in dvc(copy, "status", env=env).stdout


# Covered by tests/test_readme.py as the README gives them: an experiment run again is restored
# from the run-cache to the same bytes (`dvc exp run tsne@alexnet -S alexnet.lr=0.001` in the
# second pass), and a `-S +key` typo stops with the one line the README shows.
