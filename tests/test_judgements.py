"""What the report concludes, rule by rule, on scenarios: the practical's own numbers (the
committed full run's curves and the practical's AlexNet reference), a chance-level model, a
constant classifier, a tie, a real overfitting curve. First the verdicts of
stages/lib/judgements.py, then the sentence each scenario gets in the rendered report, in
English and Spanish (the made-up run of tests/test_report.py, changed to the scenario)."""
import json
import math
from pathlib import Path

import numpy as np
import pytest
import test_report as made_up

from stages.lib import figures, judgements

ROOT = Path(__file__).resolve().parents[1]
CIFAR10 = made_up.CIFAR10


def rows(train_loss, train_accuracy, val_loss, val_accuracy):
    return [{"epoch": i, "train_loss": a, "train_accuracy": b, "val_loss": c, "val_accuracy": d}
            for i, (a, b, c, d) in enumerate(zip(train_loss, train_accuracy, val_loss,
                                                 val_accuracy), start=1)]


# The practical's AlexNet (its statement): best 70.12 % at the last of 15 epochs, validation
# loss lowest at epoch 10 and rising after it, training loss still falling.
PRACTICAL_ALEXNET = rows(
    [1.8 - 0.1 * i for i in range(15)],
    [0.35 + 0.04 * i for i in range(15)],
    [1.50, 1.30, 1.15, 1.05, 0.98, 0.93, 0.90, 0.88, 0.87, 0.86, 0.88, 0.91, 0.95, 0.99, 1.03],
    [0.45, 0.52, 0.57, 0.60, 0.63, 0.65, 0.66, 0.67, 0.68, 0.69, 0.695, 0.697, 0.698, 0.70,
     0.7012])


def chance_matrix():
    """10 images of each CIFAR-10 class, all predicted airplane, cat or ship: 13 right."""
    matrix = np.zeros((10, 10), dtype=int)
    matrix[:, 0], matrix[:, 3], matrix[:, 8] = 5, 4, 1
    matrix[0] = 0
    matrix[0, 0], matrix[0, 3], matrix[0, 8] = 8, 1, 1
    return matrix


def test_the_committed_mnist_run_overfits_mildly_after_its_best_epoch():
    curves = figures.read_curves(ROOT / "plots/simple_cnn/live")
    best = json.loads((ROOT / "metrics/simple_cnn.json").read_text())["best_epoch"]
    fitted = judgements.fit(curves, best)
    assert fitted["trend"] == "overfitting" and fitted["min_epoch"] == 5
    assert fitted["bias"] == "good" and not fitted["best_is_last"]
    assert judgements.diagnosis("learned", fitted) == "overfitting"


def test_the_committed_alexnet_run_overfits_after_epoch_7():
    curves = figures.read_curves(ROOT / "plots/alexnet/live")
    fitted = judgements.fit(curves, 7)
    assert (fitted["trend"], fitted["min_epoch"], fitted["bias"]) == ("overfitting", 7,
                                                                      "variance")
    assert fitted["rise"] > 0.3


def test_the_practicals_alexnet_overfits_though_its_best_epoch_is_the_last():
    fitted = judgements.fit(PRACTICAL_ALEXNET, 15)
    assert fitted["trend"] == "overfitting" and fitted["min_epoch"] == 10
    assert fitted["best_is_last"]


def test_a_trend_needs_two_epochs_and_a_tolerance():
    one = rows([1.0], [0.5], [0.9], [0.6])
    assert judgements.fit(one, 1)["trend"] == "one_epoch"
    # an earlier minimum 1 % below the end is noise, not overfitting
    flat = rows([1.0, 0.8, 0.7], [0.95] * 3, [0.500, 0.495, 0.500], [0.9] * 3)
    assert judgements.fit(flat, 2)["trend"] == "levelled"
    falling = rows([1.0, 0.8], [0.5, 0.6], [0.9, 0.7], [0.6, 0.7])
    assert judgements.fit(falling, 2)["trend"] == "improving"
    assert judgements.diagnosis("learned", judgements.fit(falling, 2)) == \
        "underfitting_learning"
    diverged = rows([1.0, 0.5, 3.0], [0.95] * 3, [0.9, 0.5, 2.0], [0.9] * 3)
    assert judgements.fit(diverged, 2)["trend"] == "diverging"


def test_a_chance_level_model_is_underfitting_whatever_its_curves():
    """The tiny run's AlexNet: loss 2.2995 ≈ ln 10, 12.8 %, seven classes never predicted."""
    said = judgements.learned(CIFAR10, chance_matrix(), val_loss=2.2995)
    assert said["status"] == "chance" and said["loss_at_chance"]
    assert said["never_predicted"] == ["automobile", "bird", "deer", "dog", "frog", "horse",
                                       "truck"]
    assert abs(said["chance_loss"] - math.log(10)) < 1e-12
    assert judgements.diagnosis(said["status"], {}) == "underfitting"


def test_a_constant_classifier_is_flagged_and_not_ranked():
    constant = np.array([[0, 70], [0, 83]])
    said = judgements.learned(["ants", "bees"], constant)
    assert said["status"] == "constant" and said["constant"] == "bees"
    assert said["constant_share"] == pytest.approx(83 / 153)
    ranked, unlearned = judgements.ranking({
        "scratch": {"accuracy": 83 / 153, "images": 153, "status": "constant"},
        "svm": {"accuracy": 0.8633, "images": 153, "status": "learned"}})
    assert [r[0] for r in ranked] == ["svm"] and unlearned == ["scratch"]


def test_a_tie_is_not_a_win():
    results = {name: {"accuracy": a, "images": 153, "status": "learned"}
               for name, a in (("svm", 0.8633), ("finetune", 0.8633))}
    ranked, _ = judgements.ranking(results)
    assert [tied for _, _, tied in ranked] == [False, True]
    # the practical's own numbers on 153 images: 90.5, 91 and 91.5 % are one tie; 72 % is below
    practical = {name: {"accuracy": a, "images": 153, "status": "learned"}
                 for name, a in (("scratch", 0.72), ("svm", 0.905), ("finetune", 0.91),
                                 ("finetune_aug", 0.915))}
    ranked, _ = judgements.ranking(practical)
    assert [(s, tied) for s, _, tied in ranked] == [
        ("finetune_aug", False), ("finetune", True), ("svm", True), ("scratch", False)]


def test_layers_compare_with_tolerances():
    """The committed MNIST run: the probes differ by 0.03 points on 10,000 images (a tie), the
    silhouettes by 0.19: the intermediate layer wins, not "neither"."""
    scores = {"intermediate": {"silhouette": 0.4638, "probe": 0.99, "points": 10000},
              "final": {"silhouette": 0.2755, "probe": 0.9903, "points": 10000}}
    assert judgements.better_layer(scores) == "intermediate"
    assert judgements.measures(scores["intermediate"], scores["final"], 10000) == \
        {"silhouette": 1, "probe": 0}
    same = {"silhouette": 0.30, "probe": 0.80}
    assert judgements.compare(same, {"silhouette": 0.31, "probe": 0.81}, 100) == "tie"
    assert judgements.compare({"silhouette": 0.5, "probe": 0.6},
                              {"silhouette": 0.2, "probe": 0.9}, 1000) == "mixed"
    assert judgements.compare({"silhouette": None, "probe": 0.6}, same, 10) is None
    assert judgements.smaller(0.9896, 0.99, 10000) == "above"
    assert judgements.smaller(0.99, 0.985, 10000) == "close"
    assert judgements.smaller(0.99, 0.90, 10000) == "below"
    assert not judgements.separable(0.86) and judgements.separable(0.99)


def test_confused_pairs_count_both_directions_over_the_whole_matrix():
    """deer -> frog 25 and frog -> deer 20 is one pair of 45, though neither cell alone is
    among the largest one-way confusions."""
    matrix = np.zeros((10, 10), dtype=int)
    cat, dog, deer, frog, bird = (CIFAR10.index(c) for c in ("cat", "dog", "deer", "frog",
                                                             "bird"))
    matrix[cat, dog], matrix[dog, cat] = 30, 5
    matrix[deer, frog], matrix[frog, deer] = 25, 20
    matrix[bird, frog] = 28
    assert judgements.confused_pairs(CIFAR10, matrix) == [
        ("deer", "frog", 45), ("cat", "dog", 35), ("bird", "frog", 28)]
    assert [(c["true"], c["count"]) for c in judgements.top_confusions(CIFAR10, matrix)] == \
        [("cat", 30), ("bird", 28)]


def test_extremes_name_every_representation_tied_with_the_extreme():
    scores = {"scratch": {"silhouette": 0.05, "probe": 0.60},
              "svm": {"silhouette": 0.30, "probe": 0.90},
              "finetune": {"silhouette": 0.31, "probe": 0.91}}
    assert judgements.extremes(scores, 153) == (["finetune", "svm"], ["scratch"])
    alike = {s: {"silhouette": 0.3, "probe": 0.9} for s in ("a", "b")}
    assert judgements.extremes(alike, 153) is None


def per_class_scenario():
    matrix = np.array([[8, 2], [0, 10]])
    return judgements.per_class(["ants", "bees"], matrix)


def test_per_class_accuracy_worst_first():
    assert per_class_scenario() == [("ants", 0.8, 10, "bees"), ("bees", 1.0, 10, None)]


# The rendered sentences: the made-up run of test_report.py, changed to each scenario.

def write_matrix(path, classes, matrix):
    made_up.write(path, "actual,predicted,count\n" + "".join(
        f"{a},{p},{matrix[i][j]}\n" for i, a in enumerate(classes) for j, p in enumerate(classes)))


def cifar10_alexnet(root, curves, matrix, best_epoch):
    """AlexNet on the ten CIFAR-10 classes, with these curves and confusion counts."""
    for split in ("train", "val"):
        made_up.edit(root, "metrics/datasets.json", lambda d, split=split: d["cifar10"][
            split].update(class_names=CIFAR10, classes=10))
    made_up.curves(root / "plots/alexnet/live",
                   [(r["train_loss"], r["train_accuracy"], r["val_loss"], r["val_accuracy"])
                    for r in curves])
    write_matrix(root / "plots/alexnet/confusion.csv", CIFAR10, matrix)
    made_up.tsne(root / "plots/alexnet/tsne.csv", "layer", ("intermediate", "final"), CIFAR10)
    made_up.edit(root, "metrics/alexnet.json", lambda d: d.update(
        accuracy=curves[-1]["val_accuracy"], best_epoch=best_epoch, epochs=len(curves),
        best_accuracy=max(r["val_accuracy"] for r in curves)))


def practical_alexnet(root):
    matrix = np.diag([701] * 10)     # 1,000 images of each class, 7,012 right
    matrix[0, 0] = 703
    for i in range(10):
        matrix[i, (i + 1) % 10] = 1000 - matrix[i, i]
    cifar10_alexnet(root, PRACTICAL_ALEXNET, matrix, best_epoch=15)


def chance_alexnet(root):
    cifar10_alexnet(root, rows([2.31], [0.10], [2.2995], [0.13]), chance_matrix(),
                    best_epoch=1)


def constant_transfer(root):
    """Every trained strategy predicts bees (8 of the 12 validation images); the SVM learned."""
    for strategy in made_up.TRAINED_STRATEGIES:
        write_matrix(root / f"plots/transfer/{strategy}/confusion.csv", ["ants", "bees"],
                     [[0, 4], [0, 8]])
        made_up.edit(root, f"metrics/transfer/{strategy}.json",
                     lambda d: d.update(accuracy=8 / 12))
    write_matrix(root / "plots/transfer/svm/confusion.csv", ["ants", "bees"], [[4, 0], [1, 7]])
    made_up.edit(root, "metrics/transfer/svm.json", lambda d: d.update(accuracy=11 / 12))


SCENARIOS = {
    "en": [
        (practical_alexnet, [
            "**Overfitting.**",
            "The validation loss is lowest at epoch 10 (0.860) and then rises to 1.030 at epoch "
            "15 (20 % higher), while the training loss keeps falling (0.900 → 0.400): "
            "overfitting starts after epoch 10.",
            "The validation accuracy still peaks at the last epoch, 15 (70.12 %), but it has "
            "gained only 1.12 points since epoch 10"]),
        (chance_alexnet, [
            "**Underfitting (high bias): the model has not learned.**",
            "Its accuracy, 13.00 %, is at chance level for 10 classes (1/10 = 10.00 %).",
            "Its validation loss, 2.2995, is that of a uniform guess (ln 10 = 2.3026).",
            "7 of the 10 classes are never predicted."]),
        (constant_transfer, [
            "Only *pre-trained features + SVM* has learned",
            "*trained from scratch* predicts *bees* for every image: its 4 mistakes are all "
            "the images of the other classes."]),
    ],
    "es": [
        (practical_alexnet, [
            "**Sobreajuste.**",
            "el sobreajuste empieza tras la época 10.",
            "La exactitud de validación sigue siendo máxima en la última época, la 15 "
            "(70,12 %), pero solo ha ganado 1,12 puntos desde la época 10"]),
        (chance_alexnet, [
            "**Subajuste (sesgo alto): el modelo no ha aprendido.**",
            "Su exactitud, 13,00 %, está al nivel del azar para 10 clases (1/10 = 10,00 %).",
            "Su pérdida (*loss*) de validación, 2,2995, es la de una predicción uniforme "
            "(ln 10 = 2,3026).",
            "7 de las 10 clases no se predicen nunca."]),
        (constant_transfer, [
            "Solo *preentrenamiento + SVM* ha aprendido",
            "*entrenada desde cero* predice *abejas* para todas las imágenes"]),
    ],
}


@pytest.mark.parametrize("language, scenario, expected",
                         [(language, s, e) for language, cases in SCENARIOS.items()
                          for s, e in cases], ids=lambda v: getattr(v, "__name__", None))
def test_each_scenario_gets_its_sentence(tmp_path, monkeypatch, language, scenario, expected):
    made_up.write_inputs(tmp_path, language)
    scenario(tmp_path)
    markdown, _ = made_up.render(tmp_path, monkeypatch)
    for sentence in expected:
        assert sentence in markdown
    assert "following epochs" not in markdown and "las siguientes" not in markdown


# Runs that take every other branch of the report, for the test that every sentence is said.

DIGITS = list("0123456789")


def model_run(root, name, classes, matrix, curves_rows, scores=None):
    """Model `name` with these confusion counts, curves (train_loss, train_accuracy, val_loss,
    val_accuracy per epoch) and t-SNE scores ((silhouette, probe) of each layer)."""
    write_matrix(root / f"plots/{name}/confusion.csv", classes, matrix)
    made_up.curves(root / f"plots/{name}/live", curves_rows)
    best = max(range(len(curves_rows)), key=lambda i: (curves_rows[i][3], -i))
    made_up.edit(root, f"metrics/{name}.json", lambda d: d.update(
        accuracy=curves_rows[-1][3], best_accuracy=curves_rows[best][3], best_epoch=best + 1,
        epochs=len(curves_rows)))
    if scores:
        made_up.tsne_metrics(root, name, *scores)


def sources(root, **checks):
    for name, (origin, check) in checks.items():
        made_up.write(root / f"metrics/sources/{name}.json", {
            "name": name, "format": name, "from": origin, "check": check,
            "detail": "the file is not the release (md5 0123...)" if check == "unverified"
            else None})


def strategy_counts(root, counts):
    for strategy, matrix in counts.items():
        write_matrix(root / f"plots/transfer/{strategy}/confusion.csv", ["ants", "bees"],
                     matrix)
        made_up.edit(root, f"metrics/transfer/{strategy}.json", lambda d, m=matrix: d.update(
            accuracy=(m[0][0] + m[1][1]) / sum(map(sum, m))))


def well_trained(root):
    """An author; stand-in weights, CIFAR-10 unverified, hymenoptera downloaded unchecked; the
    Simple CNN still learning and perfect, its layers alike; AlexNet levelled off with high
    bias; the strategies: one at chance, two tied, one perfect, their features alike."""
    made_up.edit_yaml(root, lambda d: d["report"].update(author="Pérez Gómez, Ana"))
    made_up.edit(root, "models/simple_cnn.run.json", lambda d: d["params"].update(
        optimizer="adamw"))
    sources(root, cifar10=("mirror", "unverified"), hymenoptera=("upstream", "unchecked"),
            resnet50=("mirror", "unverified"))
    made_up.edit(root, "plots/transfer/svm/evaluation.json", lambda d: d.update(
        train_samples=10))
    model_run(root, "simple_cnn", DIGITS, np.diag([10] * 10),
              [(0.5, 0.92, 0.40, 0.95), (0.3, 0.97, 0.30, 0.99)],
              ((0.5, 0.99), (0.5, 0.99)))
    model_run(root, "alexnet", ["cat", "dog"], [[40, 10], [5, 45]],
              [(1.0, 0.60, 0.50, 0.85), (0.9, 0.62, 0.495, 0.85), (0.8, 0.63, 0.50, 0.85)],
              ((0.5, 0.6), (0.2, 0.9)))
    strategy_counts(root, {"scratch": [[28, 22], [23, 27]], "svm": [[45, 5], [5, 45]],
                           "finetune": [[45, 5], [5, 45]], "finetune_aug": [[50, 0], [0, 50]]})
    for s in made_up.STRATEGIES:
        made_up.write(root / f"metrics/tsne/transfer/{s}.json",
                      {"silhouette": 0.3, "probe": 0.9})


def struggling(root):
    """The Simple CNN levelled off with a large train-validation gap, its intermediate layer
    better by linear separability only and far below the network; AlexNet diverging, its
    intermediate layer better on both measures, its final layer mixed against MNIST's."""
    model_run(root, "simple_cnn", DIGITS, np.diag([9] * 10) + np.eye(10, k=1, dtype=int),
              [(0.2, 0.99, 0.40, 0.90), (0.1, 0.995, 0.40, 0.90)],
              ((0.30, 0.5), (0.31, 0.3)))
    model_run(root, "alexnet", ["cat", "dog"], [[40, 10], [5, 45]],
              [(1.0, 0.95, 0.50, 0.85), (0.5, 0.96, 0.40, 0.86), (2.0, 0.95, 1.50, 0.85)],
              ((0.5, 0.9), (0.1, 0.5)))


def not_learned(root):
    """The Simple CNN at chance level with one class never predicted; AlexNet predicting dog
    for every image, its final layer better than MNIST's."""
    matrix = np.ones((10, 10), dtype=int)   # 10 images a class, about 1 right of each
    matrix[:, 9] = 0
    for i in range(10):
        matrix[i, (i + 1) % 9] += 1
    model_run(root, "simple_cnn", DIGITS, matrix, [(2.3, 0.1, 2.30, 0.1)],
              ((0.1, 0.2), (0.1, 0.5)))
    model_run(root, "alexnet", ["cat", "dog"], [[0, 50], [0, 50]],
              [(0.7, 0.5, 0.69, 0.5)], ((0.9, 0.99), (0.9, 0.99)))


def overfit_early(root):
    """The Simple CNN levelled off and well fitted; AlexNet overfitting after its best epoch
    (the committed run's curve); a third model still learning with high bias."""
    model_run(root, "simple_cnn", DIGITS, np.diag([10] * 10),
              [(0.2, 0.99, 0.050, 0.985), (0.1, 0.995, 0.049, 0.986)])
    model_run(root, "alexnet", ["cat", "dog"], [[45, 5], [5, 45]],
              [(1.0, 0.6, 0.8, 0.7), (0.5, 0.8, 0.6, 0.9), (0.2, 0.95, 0.9, 0.85)])
    made_up.a_third_model(root)
    model_run(root, "lenet", DIGITS, np.diag([10] * 10),
              [(1.0, 0.5, 0.9, 0.6), (0.8, 0.6, 0.7, 0.7)])


RUNS = (None, made_up.other_branches, made_up.close_probe_and_missing_scores,
        made_up.a_third_model, practical_alexnet, chance_alexnet, constant_transfer,
        well_trained, struggling, not_learned, overfit_early)


def test_every_sentence_is_used(tmp_path, monkeypatch):
    """No dead wording: over runs that take every branch, each sentence of en.yaml is said,
    both forms of each plural included, and each name of a download is looked up."""
    from stages.lib import wording
    from stages.lib.core import registry

    said, say, download = set(), wording.Language.say, wording.Language.download

    def recording(self, key, **fields):
        plural = "n" in fields and isinstance(self.words[key.split(".")[0]], dict) and \
            set(leaf(self.words, key)) == {"one", "other"}
        said.add(f"{key}.{'one' if fields['n'] == 1 else 'other'}" if plural else key)
        return say(self, key, **fields)

    monkeypatch.setattr(wording.Language, "say", recording)
    monkeypatch.setattr(wording.Language, "download", lambda self, name: said.add(
        f"downloads.{name}") or download(self, name))
    monkeypatch.setattr(registry, "MODELS_FOLDER", registry.MODELS_FOLDER)
    for run in RUNS:
        root = tmp_path / (run.__name__ if run else "first")
        made_up.write_inputs(root)
        if run:
            run(root)
        made_up.render(root, monkeypatch)
    # class names are said where the data has them (test_report.py checks them); the number
    # marks are the language's settings, not sentences
    assert said == {key for key in made_up.leaves(made_up.wording("en"))
                    if not key.startswith("class_names.")
                    and key not in ("decimal_mark", "thousands_mark")}


def leaf(words, key):
    for part in key.split("."):
        words = words[part]
    return words
