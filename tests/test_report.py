"""The report stage on a small, made-up set of the files it reads (no DVC, no training): its
wording files agree across languages, its sentences come out filled in, plural-aware and in the
language's number format, and names from data stay text."""
import json
import re
import string
from pathlib import Path

import pytest
import yaml

import helpers
from stages import report
from stages.lib import png, records
from stages.lib.core import params, registry
from stages.lib.core.files import write_atomic

ROOT = Path(__file__).resolve().parents[1]
# what params.yaml trains: the files below are made up for these
SETTINGS = params.load(ROOT / "params.yaml")
TRAINED_STRATEGIES = tuple(registry.strategies(SETTINGS))
STRATEGIES = tuple(registry.report_order(registry.strategies(SETTINGS)))
WORDING = ROOT / "stages" / "templates" / "wording"


def write(path, content):
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content if isinstance(content, str) else json.dumps(content))


def split(height, width, channels, samples, names):
    return {"height": height, "width": width, "channels": channels, "samples": samples,
            "classes": len(names), "class_names": names}


def run_record(params, seconds, threads=2):
    return {"device": "cpu", "precision": "bfloat16", "cpu": "Test CPU", "cpu_threads": threads,
            "gpu": None, "params": params, "seconds": seconds}


def model_metrics(epochs, best_epoch):
    """A model's metrics with its evaluation details (its confusions and curves are files of
    their own: confusion.csv, live/)."""
    return {"best_accuracy": 0.875, "best_epoch": best_epoch, "accuracy": 0.75,
            "params": 1234567, "params_no_bias": 1234000,
            "largest_layer": "features.6: Linear(8, 4)", "largest_layer_params": 1000000,
            "epochs": epochs}


def tsne_metrics(root, name, intermediate, final, folds=2):
    """metrics/tsne/<name>/<layer>.json (silhouette, probe) and plots/<name>/tsne.json."""
    for layer, (silhouette, probe) in (("intermediate", intermediate), ("final", final)):
        write(root / f"metrics/tsne/{name}/{layer}.json",
              {"silhouette": silhouette, "probe": probe})
    write(root / f"plots/{name}/tsne.json",
          {"intermediate": {"dimensions": 2048, "points": 100},
           "final": {"dimensions": 10, "points": 100},
           "settings": {"points": 60, "perplexity": 5.0, "probe_folds": folds}})


def curves(live, rows):
    """dvclive's TSV files: rows of (train_loss, train_accuracy, val_loss, val_accuracy)."""
    for column, (part, what) in enumerate((("train", "loss"), ("train", "accuracy"),
                                           ("val", "loss"), ("val", "accuracy"))):
        write(live / "plots" / "metrics" / part / f"{what}.tsv",
              f"step\t{what}\n" + "".join(f"{i}\t{r[column]}\n"
                                           for i, r in enumerate(rows, start=1)))


def write_inputs(root, language="en", classes=("ants", "bees"), author="none"):
    """Every file stages.report reads, in `root`: Simple CNN trained 1 epoch, AlexNet 2."""
    write(root / "params.yaml", yaml.safe_dump(
        {key: SETTINGS[key] for key in ("models", "strategies", "download")}
        | {"report": {"language": language, "author": author}}, sort_keys=False))
    classes = list(classes)
    write(root / "metrics/datasets.json", {
        "mnist": {"train": split(28, 28, 1, 200, list("0123456789")),
                  "val": split(28, 28, 1, 100, list("0123456789"))},
        "cifar10": {"train": split(32, 32, 3, 1500, ["cat", "dog"]),
                    "val": split(32, 32, 3, 100, ["cat", "dog"])},
        "hymenoptera": {"train": split(32, 32, 3, 12, classes),
                        "val": split(32, 32, 3, 8, classes)}})
    train = {"epochs": 1, "batch_size": 32, "lr": 0.0005, "optimizer": "adam", "augment": False}
    write(root / "models/simple_cnn.run.json", run_record(train, 12.5, threads=1))
    write(root / "models/alexnet.run.json",
          run_record({**train, "epochs": 2, "optimizer": "sgd", "augment": True}, 3000.0))
    for strategy in TRAINED_STRATEGIES:
        write(root / f"models/transfer/{strategy}.run.json",
              run_record({"dataset": "hymenoptera", "image_size": 32, "epochs": 2}, 60.0))
    write(root / "metrics/simple_cnn.json", model_metrics(1, 1))
    write(root / "metrics/alexnet.json",
          model_metrics(2, 1))
    tsne_metrics(root, "simple_cnn", (0.25, 0.8), (0.5, 0.9))
    tsne_metrics(root, "alexnet", (0.25, 0.9), (0.5, 0.8))
    for i, s in enumerate(STRATEGIES):
        write(root / f"metrics/tsne/transfer/{s}.json",
              {"silhouette": 0.1 * (i + 1), "probe": 0.6 + 0.1 * i})
    write(root / "plots/transfer/tsne.json",
          {**{s: {"points": 8} for s in STRATEGIES}, "settings": {"probe_folds": 2}})
    for name in ("mnist", "cifar10", "hymenoptera", "resnet50"):   # download@<name>'s records
        write(root / f"metrics/sources/{name}.json",
              {"name": name, "format": "weights" if name == "resnet50" else name,
               "from": "mirror", "check": "verified", "detail": None})
    for i, strategy in enumerate(STRATEGIES):
        result = {"accuracy": 0.5 + 0.125 * i}
        if strategy in TRAINED_STRATEGIES:
            result.update(best_accuracy=0.625 + 0.125 * i, best_epoch=1)
        else:
            result.update(kernel="rbf", C=1.0, gamma="scale")
        write(root / f"metrics/transfer/{strategy}.json", result)
    curves(root / "plots/simple_cnn/live", [(1.0, 0.5, 0.5, 0.75)])
    curves(root / "plots/alexnet/live", [(1.0, 0.5, 0.5, 0.75), (0.25, 0.75, 0.625, 0.7)])
    for strategy in TRAINED_STRATEGIES:
        curves(root / f"plots/transfer/{strategy}/live",
               [(1.0, 0.5, 0.75, 0.5), (0.5, 0.75, 0.5, 0.75)])
    # the confusion counts (accuracy 0.75 of the models: 3 of 4 right) and t-SNE coordinates
    write(root / "plots/simple_cnn/confusion.csv", "actual,predicted,count\n" + "".join(
        f"{a},{p},{ {('0', '0'): 9, ('7', '2'): 2, ('1', '2'): 1}.get((a, p), 0)}\n"
        for a in "0123456789" for p in "0123456789"))   # 9 of 12 right: 75 %
    confusion(root / "plots/alexnet/confusion.csv", ["cat", "dog"], 3, 1)
    tsne(root / "plots/simple_cnn/tsne.csv", "layer", ("intermediate", "final"),
         list("0123456789"))
    tsne(root / "plots/alexnet/tsne.csv", "layer", ("intermediate", "final"), ["cat", "dog"])
    tsne(root / "plots/transfer/tsne.csv", "strategy", STRATEGIES, classes)
    for i, strategy in enumerate(STRATEGIES):   # accuracy 0.5 + 0.125 i: 4 + i of 8 right
        confusion(root / f"plots/transfer/{strategy}/confusion.csv", classes, 4 + i, 4 - i)
    # the details beside the metrics: what the stages used (the datasets above are whole)
    for name in ("simple_cnn", "alexnet"):
        write(root / f"plots/{name}/evaluation.json",
              {"train_samples": 200 if name == "simple_cnn" else 1000, "val_samples": 100})
    for strategy in STRATEGIES:
        write(root / f"plots/transfer/{strategy}/evaluation.json",
              {"train_samples": 12, "val_samples": 8, "epochs": 2})


def confusion(path, classes, right, wrong):
    """A confusion.csv with `right` answers on the first class and `wrong` first-taken-for-
    second ones, every other cell 0."""
    counts = {(classes[0], classes[0]): right, (classes[0], classes[1]): wrong}
    write(path, "actual,predicted,count\n" + "".join(
        f"{a},{p},{counts.get((a, p), 0)}\n" for a in classes for p in classes))


def tsne(path, group, groups, classes):
    """A tsne.csv: two points of each class per group."""
    write(path, f"{group},index,x,y,label,class\n" + "".join(
        f"{g},{i},{i * 1.5},{-i * 0.5},{i % len(classes)},{classes[i % len(classes)]}\n"
        for g in groups for i in range(2 * len(classes))))


def render(root, monkeypatch, pictures=False):
    """Run the report stage in `root`; return (report.md, report.html). Its figures are drawn
    (every word on them said) but, unless `pictures`, not encoded: each file holds a 1x1 PNG
    (the tests that read figures ask for them; test_pipeline.py renders real runs whole)."""
    from stages import report

    if not pictures:
        monkeypatch.setattr(png, "save", unencoded)
    monkeypatch.chdir(root)
    report.main([])
    return (root / "reports/report.md").read_text(), (root / "reports/report.html").read_text()


def unencoded(fig, path):
    """png.save without the encoding: the figure closed, a 1x1 PNG written in its place."""
    png.plt.close(fig)
    write_atomic(path, ONE_PIXEL)


ONE_PIXEL = bytes.fromhex("89504e470d0a1a0a0000000d4948445200000001000000010802000000907753de"
                          "0000000c49444154789c63f8ffff3f0005fe02fe0def46b80000000049454e44ae"
                          "426082")   # a white 1x1 PNG (PIL's)


def fields(sentence):
    return {name for _, name, _, _ in string.Formatter().parse(sentence) if name is not None}


def leaves(words, prefix=""):
    """{dotted key: sentence} of a wording file, plural forms included (`times.one`)."""
    found = {}
    for key, value in words.items():
        if isinstance(value, dict):
            found.update(leaves(value, f"{prefix}{key}."))
        else:
            found[f"{prefix}{key}"] = value
    return found


def wording(language):
    return yaml.safe_load((WORDING / f"{language}.yaml").read_text())


def test_every_language_has_the_same_sentences_with_the_same_fields():
    languages = sorted(p.stem for p in WORDING.glob("*.yaml"))
    assert languages == report.languages() and "en" in languages
    english = leaves(wording("en"))
    for language in languages:
        sentences = leaves(wording(language))
        assert sentences.keys() == english.keys(), language
        for key, sentence in sentences.items():
            assert isinstance(sentence, str) and sentence, f"{language}: {key}"
            assert fields(sentence) == fields(english[key]), f"{language}: {key}"
            assert "{{" not in sentence and "{%" not in sentence, f"{language}: {key}"


def test_plurals_and_strategy_names_have_their_forms():
    words = wording("en")
    for key, value in words.items():
        if isinstance(value, dict) and {"one", "other"} & value.keys():
            assert value.keys() == {"one", "other"}, key
            assert all("n" in fields(form) for form in value.values()), key
    assert tuple(words["strategies"]) == STRATEGIES


def edit(root, path, change):
    data = json.loads((root / path).read_text())
    change(data)
    (root / path).write_text(json.dumps(data))


def edit_yaml(root, change):
    data = yaml.safe_load((root / "params.yaml").read_text())
    change(data)
    (root / "params.yaml").write_text(yaml.safe_dump(data, sort_keys=False))


def other_branches(root):
    """write_inputs' run, with the report's other branches: the intermediate layer separates
    better, the probe beats the network, no CPU recorded."""
    edit(root, "metrics/tsne/simple_cnn/intermediate.json",
         lambda d: d.update(silhouette=0.75, probe=0.95))
    edit(root, "plots/simple_cnn/tsne.json", lambda d: d.update(settings={"probe_folds": 1}))
    edit(root, "models/simple_cnn.run.json", lambda d: (d.pop("cpu"), d.update(cpu_threads=2)))


def close_probe_and_missing_scores(root):
    edit(root, "metrics/tsne/simple_cnn/intermediate.json", lambda d: d.update(probe=0.87))
    edit(root, "metrics/tsne/transfer/svm.json", lambda d: d.update(silhouette=None))


def a_third_model(root):
    """A model added to params.yaml's `models` (no wording of its own): the report's common
    sections for it, under the name params.yaml gives it. Its module (which the report does not
    run) is a file in a folder that stands for stages/lib/models/."""
    import shutil

    modules = root / "model_modules"
    modules.mkdir()
    for name in ("simple_cnn", "alexnet", "lenet"):
        (modules / f"{name}.py").write_text("")
    registry.MODELS_FOLDER = modules   # put back by the tests' monkeypatch

    edit_yaml = yaml.safe_load((root / "params.yaml").read_text())
    edit_yaml["models"]["lenet"] = "mnist"
    (root / "params.yaml").write_text(yaml.safe_dump(edit_yaml, sort_keys=False))
    for source, target in (("plots/simple_cnn", "plots/lenet"),
                           ("metrics/tsne/simple_cnn", "metrics/tsne/lenet")):
        shutil.copytree(root / source, root / target)
    for pattern in ("metrics/{}.json", "models/{}.run.json"):
        shutil.copy(root / pattern.format("simple_cnn"), root / pattern.format("lenet"))


def test_a_model_added_to_params_gets_the_common_sections(tmp_path, monkeypatch):
    monkeypatch.setattr(registry, "MODELS_FOLDER", registry.MODELS_FOLDER)
    write_inputs(tmp_path)
    a_third_model(tmp_path)
    markdown, _ = render(tmp_path, monkeypatch)
    assert "## lenet on MNIST" in markdown
    for figure in ("lenet_curves.png", "lenet_confusion.png", "lenet_tsne_final.png"):
        assert f"(figures/{figure})" in markdown
        assert (tmp_path / "reports/figures" / figure).is_file()
    assert "lenet" in markdown.split("## lenet on MNIST")[0]   # its training time, in the run


CIFAR10 = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
           "truck"]   # the names in CIFAR-10's batches.meta


def test_class_names_are_translated():
    """Every language names each class of CIFAR-10 and hymenoptera; a class it does not know
    (a dataset of your own) keeps its folder's name."""
    from stages import report

    for language in ("en", "es"):
        names = wording(language)["class_names"]
        assert list(names["cifar10"]) == CIFAR10 and list(names["hymenoptera"]) == ["ants", "bees"]
    spanish = report.Language("es")
    assert [spanish.class_name("cifar10", c) for c in ("airplane", "bird", "cat")] == \
        ["avión", "pájaro", "gato"]
    assert spanish.class_name("cifar10", "zebra") == "zebra"
    assert spanish.class_name("my_photos", "ants") == "ants"


@pytest.mark.parametrize("language", ["en", "es"])
def test_every_word_in_the_figures_comes_from_the_wording(tmp_path, monkeypatch, language):
    """Each figure the report shows is drawn by the report, and each word in it (titles, axis
    labels, ticks, legends, class names) is a sentence or class name of the report's language:
    taking those out of every text leaves no letter."""
    from stages import report

    said, say, class_name = set(), report.Language.say, report.Language.class_name
    monkeypatch.setattr(report.Language, "say", lambda self, key, **f: said.add(
        out := say(self, key, **f)) or out)
    monkeypatch.setattr(report.Language, "class_name", lambda self, d, n: said.add(
        out := class_name(self, d, n)) or out)
    texts = helpers.figure_texts(monkeypatch)
    write_inputs(tmp_path, language, classes=("ants", "bees"))
    # AlexNet's classes: two of CIFAR-10's
    for split in ("train", "val"):
        edit(tmp_path, "metrics/datasets.json",
             lambda d, split=split: d["cifar10"][split].update(class_names=["airplane", "bird"]))
    confusion(tmp_path / "plots/alexnet/confusion.csv", ["airplane", "bird"], 3, 1)
    tsne(tmp_path / "plots/alexnet/tsne.csv", "layer", ("intermediate", "final"),
         ["airplane", "bird"])
    markdown, _ = render(tmp_path, monkeypatch, pictures=True)

    shown = sorted(re.findall(r"!\[[^\]]*\]\(figures/([^)]+)\)", markdown))
    assert sorted(texts) == sorted(set(shown)) and len(texts) == 12
    pieces = sorted((s for s in said if s.strip()), key=len, reverse=True)
    for name, found in texts.items():
        for text in found:
            rest = text
            for piece in pieces:
                rest = rest.replace(piece, " ")
            assert not re.search(r"[^\W\d_]", rest), f"{name}: {text!r} leaves {rest!r}"
    everything = " ".join(t for found in texts.values() for t in found)
    if language == "es":
        for english in ("epoch", "loss", "accuracy", "train", "validation", "label",
                        "airplane", "bird", "ants", "bees", "silhouette", "fine-tun",
                        "scratch"):
            assert english not in everything.lower(), english
        for spanish in ("época", "pérdida", "exactitud", "avión", "pájaro", "hormigas",
                        "abejas", "clase real", "clase predicha", "ajuste fino"):
            assert spanish in everything, spanish
        assert "0,5" in everything and not re.search(r"\d\.\d", everything)


def test_every_image_has_its_caption_as_alt_text(tmp_path, monkeypatch):
    write_inputs(tmp_path, "es")
    markdown, html = render(tmp_path, monkeypatch)
    images = re.findall(r"<img[^>]*>", html)
    assert len(images) == 12
    for image in images:
        alt = re.search(r'alt="([^"]*)"', image)
        assert alt and len(alt.group(1)) > 20, image


def test_one_model_behind_each_number(tmp_path, monkeypatch):
    """The final accuracy in the transfer table, and each model's, sits beside the right
    answers counted in the confusion matrix it was computed from; the sizes are those used."""
    write_inputs(tmp_path)
    markdown, _ = render(tmp_path, monkeypatch)
    english = report.Language("en")
    for i, strategy in enumerate(STRATEGIES):
        row = next(line for line in markdown.splitlines()
                   if line.startswith(f"| {english.strategy(strategy)} |"))
        accuracy = json.loads((tmp_path / f"metrics/transfer/{strategy}.json").read_text())
        assert f"| {100 * accuracy['accuracy']:.2f} % | {4 + i} / 8 |" in row
    assert "**75.00 %** (3 of 4 images classified correctly)" in markdown
    assert "the best validation accuracy, 87.50 %, was reached at epoch 1" in markdown
    assert "| training | 28 | 28 | 1 | 200 | 10 |" in markdown   # all of MNIST's (made-up) 200
    assert "| training | 32 | 32 | 3 | 1,000 (of 1,500) | 2 |" in markdown
    assert "Trained on CPU with bfloat16." in markdown


@pytest.mark.parametrize("language, expected", [
    ("en", ["Training: 1 epoch, batch size 32, Adam with learning rate 0.0005.",
            "Training: 2 epochs, batch size 32, SGD with learning rate 0.0005, with random "
            "shifts and flips (data augmentation).",
            "The two most frequent confusions are 2 images of class 7 classified as 2 and 1 "
            "image of class 1 classified as 2.",
            "The only confusion is 1 image of class cat classified as dog.",
            "Device: CPU (1 thread of Test CPU); numerical precision: bfloat16",
            "Trainable parameters: **1,234,567** (1,234,000 without the bias terms).",
            "| training | 32 | 32 | 3 | 1,000 (of 1,500) | 2 |",
            "Validation accuracy of the final model, after epoch 2: **75.00 %** (3 of 4 images "
            "classified correctly).",
            "a logistic regression on those features, cross-validated (2 folds).",
            "| intermediate layer (2048-d) | 2048 | 0.250 | 80.00 % |",
            "AlexNet: 1,000 of the 1,500 training images, a subset.",
            "Images at 32×32 pixels, where the practical uses 224×224.",
            "12 training and 8 validation images of 2 classes (ants, bees), resized to 32×32 "
            "pixels.",
            "| fine-tuning with data augmentation | 87.50 % | 7 / 8 | 100.00 % (1) | 91.5 % | "
            "0.400 | 90.00 % |",
            "| pre-trained features + SVM | 62.50 % | 5 / 8 | — | 90.5 % | 0.200 | 70.00 % |",
            "ResNet-50 trained from scratch 60 s",
            "AlexNet 3,000 s", "53.2 min in all",
            "MNIST: verified against the published checksum (from a local mirror)",
            "## 1.1 Simple CNN on MNIST",
            "### Does the model suffer from high bias or from overfitting? Would more epochs "
            "help?"]),
    ("es", ["Entrenamiento: 1 época, tamaño de lote 32, Adam con tasa de aprendizaje 0,0005.",
            "Entrenamiento: 2 épocas, tamaño de lote 32, SGD con tasa de aprendizaje 0,0005, "
            "con desplazamientos y volteos aleatorios (aumento de datos).",
            "Las dos confusiones más frecuentes son 2 imágenes de la clase 7 clasificadas como 2 "
            "y 1 imagen de la clase 1 clasificada como 2.",
            "Dispositivo: CPU (1 hilo de Test CPU); precisión numérica: bfloat16",
            "Parámetros entrenables: **1.234.567** (1.234.000 sin contar los términos de "
            "sesgo, *bias*).",
            "| entrenamiento | 32 | 32 | 3 | 1.000 (de 1.500) | 2 |",
            "Exactitud (*accuracy*; «precisión» en el enunciado) de validación del modelo "
            "final, tras la época 2: **75,00 %** (3 de 4 imágenes clasificadas correctamente).",
            "Entrenado en CPU con bfloat16.",
            "(validación cruzada con 2 pliegues)",
            "| ajuste fino con aumento de datos | 87,50 % | 7 / 8 | 100,00 % (1) | 91,5 % | "
            "0,400 | 90,00 % |",
            "## 1.3 Aprendizaje por transferencia con ResNet-50",
            "ResNet-50 entrenada desde cero 60 s",
            "53,2 min en total"]),
])
def test_report_sentences(tmp_path, monkeypatch, language, expected):
    write_inputs(tmp_path, language)
    markdown, html = render(tmp_path, monkeypatch)
    for sentence in expected:
        assert sentence in markdown
    assert not re.search(r"\{\{|\}\}|\{%|%\}|\{#|#\}|\{\w+\}", markdown)   # all filled in
    assert "commit" not in markdown.lower()
    if language == "es":
        assert not re.search(r"\d\.\d\d %", markdown) and "1,234" not in markdown
    for link in re.findall(r"!\[[^\]]+\]\(([^)]+)\)", markdown):
        assert (tmp_path / "reports" / link).is_file(), link
    assert html.startswith(f'<!DOCTYPE html>\n<html lang="{language}">')
    # one file: every figure embedded, none linked
    assert "<table>" in html and "figures/" not in html
    assert html.count('src="data:image/png;base64,') == markdown.count("](figures/")


def test_names_from_data_are_text_in_the_html(tmp_path, monkeypatch):
    """A class named like an HTML tag or a Markdown link is shown as written, never markup."""
    hostile = ["<img src=x onerror=alert(1)>", "[x](javascript:alert(1))"]
    write_inputs(tmp_path, classes=hostile)
    names = [hostile[0], "<script>alert(2)</script>"]
    for split in ("train", "val"):
        edit(tmp_path, "metrics/datasets.json",
             lambda d, split=split: d["cifar10"][split].update(class_names=names))
    confusion(tmp_path / "plots/alexnet/confusion.csv", names, 3, 1)
    tsne(tmp_path / "plots/alexnet/tsne.csv", "layer", ("intermediate", "final"), names)
    markdown, html = render(tmp_path, monkeypatch)
    assert "<img src=x" not in html and "<script>" not in html
    assert 'href="javascript' not in html and "<a " not in html
    assert "&#60;img src=x onerror=alert(1)&#62;" in html   # shown as written
    assert "<img" not in markdown and "](javascript" not in markdown


def test_a_missing_record_stops_the_stage(tmp_path, monkeypatch):
    from stages.lib.core.common import StageError

    write_inputs(tmp_path)
    (tmp_path / "plots/transfer/tsne.csv").unlink()
    with pytest.raises(StageError, match=r"plots/transfer/tsne\.csv not found"):
        render(tmp_path, monkeypatch)


def test_metrics_and_their_details_are_read_as_one_record(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "m.json", {"accuracy": 0.5, "final": {"silhouette": 0.25}})
    write(tmp_path / "d.json", {"epochs": 3, "final": {"dimensions": 10}, "settings": {"x": 1}})
    assert records.merged("m.json", "d.json") == {
        "accuracy": 0.5, "final": {"silhouette": 0.25, "dimensions": 10}, "epochs": 3,
        "settings": {"x": 1}}


def test_a_report_that_fails_midway_leaves_the_previous_one_whole(tmp_path, monkeypatch):
    """reports/ is written in a folder beside it that takes its place at the end: a failure
    after some figures leaves the last report as it was, and no staging folder behind."""
    from stages import report
    from stages.lib import figures
    from stages.lib.core.common import StageError

    write_inputs(tmp_path)
    render(tmp_path, monkeypatch)
    before = {p.relative_to(tmp_path): p.read_bytes()
              for p in (tmp_path / "reports").rglob("*") if p.is_file()}
    assert len(before) > 10

    def broken(*args, **kwargs):
        raise StageError("disk trouble")

    monkeypatch.setattr(figures, "tsne_grid", broken)   # part 3, after parts 1 and 2's figures
    with pytest.raises(StageError, match="disk trouble"):
        report.main([])
    after = {p.relative_to(tmp_path): p.read_bytes()
             for p in (tmp_path / "reports").rglob("*") if p.is_file()}
    assert after == before
    assert not list(tmp_path.glob(".reports*"))


def test_figures_give_accuracy_in_percent_and_a_loss_spanning_orders_of_magnitude_on_a_log_axis():
    """As the text speaks: accuracy ticks in percent with the language's decimal mark; a loss
    axis whose values span more than LOG_SPREAD times (a diverged strategy) logarithmic, so the
    others are not flattened into the floor; a narrow one linear."""
    from stages.lib import figures, plots
    from stages.lib.wording import Language

    spanish = Language("es")
    wide = plots.lines_figure({"a": [(1, 4000.0, 0.5), (2, 3000.0, 0.55)],
                               "b": [(1, 0.7, 0.6), (2, 0.5, 0.725)]}, "época", ("p", "e"))
    narrow = plots.lines_figure({"a": [(1, 0.9, 0.5), (2, 0.5, 0.6)]}, "época", ("p", "e"))
    for fig, scale in ((wide, "log"), (narrow, "linear")):
        figures.readable(fig, spanish)
        figures.decimal_ticks(fig, spanish.decimal)
        loss_ax, accuracy_ax = fig.axes
        assert loss_ax.get_yscale() == scale
        fig.canvas.draw()
        ticks = [t.get_text() for t in accuracy_ax.get_yticklabels() if t.get_text()]
        assert ticks and all(t.endswith(" %") for t in ticks), ticks
        assert all("e+" not in t.get_text() and "^" not in t.get_text()
                   for t in loss_ax.get_yticklabels())
    assert spanish.num(-0.257) == "\u22120,257" and spanish.pct(0.5) == "50,00 %"
