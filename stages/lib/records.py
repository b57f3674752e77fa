"""The report's inputs: the stages' records read and put together, with what judgements make of
them (stages/lib/judgements.py); no wording and no rendering (stages/report.py does those)."""
import hashlib
import importlib.metadata
import json
from pathlib import Path

import yaml

from . import analysis, figures, judgements
from .core import registry
from .core.files import read_json
from .wording import TEMPLATES

SOURCES = Path("metrics/sources")   # download@<name>'s record of where its data came from
LIBRARIES = ("torch", "torchvision", "dvc", "dvclive", "scikit-learn", "numpy")
PRACTICAL = yaml.safe_load((TEMPLATES / "practical.yaml").read_text())


def merged(metrics_path, details_path):
    """A metrics file (headline numbers) with its details file (what `dvc metrics show` does not
    need to show) merged in, one level deep: the whole record a stage wrote."""
    whole = read_json(metrics_path)
    for key, value in read_json(details_path).items():
        whole[key] = {**whole[key], **value} if isinstance(value, dict) and \
            isinstance(whole.get(key), dict) else value
    return whole


def counted(result, confusion_csv, val_loss=None):
    """`result` (a metrics record) with `correct` and `images` from the confusion counts its
    accuracy was computed from (they agree by construction), `counts` (figures.read_confusion's
    classes and matrix), and what judgements make of them: `learned` (chance level, constant
    classifier, classes never predicted), `per_class`, `mistakes` (every one-way confusion,
    most first), and `status`, judgements.ranking's key."""
    classes, matrix = figures.read_confusion(confusion_csv)
    learned = judgements.learned(classes, matrix, val_loss)
    return {**result, "correct": int(matrix.trace()), "images": int(matrix.sum()),
            "counts": (classes, matrix), "learned": learned, "status": learned["status"],
            "per_class": judgements.per_class(classes, matrix),
            "mistakes": judgements.top_confusions(classes, matrix, k=len(classes) ** 2)}


def used_sizes(splits, record):
    """The dataset summary `splits` (metrics/datasets.json: the whole dataset) with `used`, the
    images a stage actually used (its record's train_samples/val_samples, after *_samples)."""
    return {split: {**s, "used": record.get(f"{split}_samples", s["samples"])}
            for split, s in splits.items()}


def devices(records):
    """The distinct (device, precision) of some run records, in order: a GPU by its name, else
    the device torch names (cpu, mps)."""
    return list(dict.fromkeys((r["gpu"] or r["device"], r["precision"]) for r in records))


def model(name, dataset, datasets, runs):
    """What the report says about a model trained from scratch on `dataset` (parts 1, 2)."""
    tsne = analysis.read_scores(f"metrics/tsne/{name}", f"plots/{name}/tsne.json",
                                ("intermediate", "final"))
    curves = figures.read_curves(f"plots/{name}/live")
    metrics = counted(merged(f"metrics/{name}.json", f"plots/{name}/evaluation.json"),
                      f"plots/{name}/confusion.csv", curves[-1]["val_loss"])
    classes, matrix = metrics["counts"]
    return {"name": name, "dataset": dataset, "splits": used_sizes(datasets[dataset], metrics),
            "metrics": metrics, "tsne": tsne, "run": runs[name]["params"],
            "devices": devices([runs[name]]), "curves": curves,
            "fit": judgements.fit(curves, metrics["best_epoch"]),
            "better_layer": judgements.better_layer(tsne),
            "layer_measures": judgements.measures(tsne["intermediate"], tsne["final"],
                                                  tsne["intermediate"]["points"]),
            "pairs": judgements.confused_pairs(classes, matrix),
            "practical": PRACTICAL["models"].get(name)}


def sources(names):
    """metrics/sources/<name>.json of each download the report's numbers come from."""
    return {name: read_json(SOURCES / f"{name}.json") for name in dict.fromkeys(names)}


def caveats(parts, found, standin, image_size):
    """Where this run is not the practical's, each {"part", "key", fields}: data accepted
    unverified, stand-in weights, subsets, other epochs, another image size. `parts`: {part:
    (dataset, splits with `used`, epochs or None)}, a model's part by its name, part 3's
    "transfer". The report lists them all at the top and each beside the part it affects."""
    said = []
    for part, (dataset, splits, epochs) in parts.items():
        if found[dataset]["check"] == "unverified":
            said.append({"part": part, "key": "unverified", "dataset": dataset,
                         "detail": found[dataset]["detail"]})
        said += [{"part": part, "key": "subset", "split": split, "used": s["used"],
                  "total": s["samples"]}
                 for split, s in splits.items() if s["used"] != s["samples"]]
        practical = PRACTICAL["models"].get(part)
        if practical and epochs != practical["epochs"]:
            said.append({"part": part, "key": "epochs", "epochs": epochs,
                         "practical": practical["epochs"]})
    if standin:
        said.append({"part": "transfer", "key": "standin", "strategies": standin,
                     "detail": found[registry.WEIGHTS_DOWNLOAD]["detail"]})
    if image_size != PRACTICAL["transfer"]["image_size"]:
        said.append({"part": "transfer", "key": "image_size", "size": image_size,
                     "practical": PRACTICAL["transfer"]["image_size"]})
    return said


def gather(settings):
    """Everything the report says, as numbers and judgements: `trained` (each model's record,
    model()), `runs` (each training stage's run record), `transfer` (part 3: results per
    strategy in the report's order, separability, ranking, extremes, the splits used),
    `sources` (sources()), `standin` (the strategies whose ImageNet weights are a stand-in),
    `caveats` (caveats()), `params_hash` (of the hyperparameters every stage recorded) and
    `libraries` (their versions here)."""
    trained_on, strategies = registry.models(settings), registry.strategies(settings)
    order = registry.report_order(strategies)
    runs = {**{m: read_json(f"models/{m}.run.json") for m in trained_on},
            **{f"transfer@{s}": read_json(f"models/transfer/{s}.run.json") for s in strategies}}
    datasets = read_json("metrics/datasets.json")
    # parts 1 and 2 have questions of their own; any other model gets the common sections
    trained = {m: model(m, dataset, datasets, runs) for m, dataset in trained_on.items()}
    simple_cnn, alexnet = trained.get("simple_cnn"), trained.get("alexnet")
    if simple_cnn:
        probe = simple_cnn["tsne"]["intermediate"]
        simple_cnn["smaller"] = judgements.smaller(simple_cnn["metrics"]["best_accuracy"],
                                                   probe["probe"], probe["points"])
    if simple_cnn and alexnet:   # 1.2: CIFAR-10's classes against MNIST's, final layers
        a, b = alexnet["tsne"]["final"], simple_cnn["tsne"]["final"]
        alexnet["versus"] = judgements.versus(a, b, a["points"], b["points"])
    transfer_runs = {s: runs[f"transfer@{s}"] for s in strategies}
    curves = {s: figures.read_curves(f"plots/transfer/{s}/live") for s in strategies}
    results = {s: counted(merged(f"metrics/transfer/{s}.json",
                                 f"plots/transfer/{s}/evaluation.json"),
                          f"plots/transfer/{s}/confusion.csv",
                          curves[s][-1]["val_loss"] if s in curves else None)
               for s in order}
    separability = analysis.read_scores("metrics/tsne/transfer", "plots/transfer/tsne.json",
                                        order)
    used = next(iter(transfer_runs.values()))["params"]
    found = sources([m["dataset"] for m in trained.values()]
                    + [used["dataset"], registry.WEIGHTS_DOWNLOAD])
    standin = [s for s in order if s == "svm" or registry.STARTS[strategies[s]] == "imagenet"] \
        if found[registry.WEIGHTS_DOWNLOAD]["check"] == "unverified" else []
    transfer_splits = used_sizes(datasets[used["dataset"]], results["svm"])
    said = caveats({**{name: (m["dataset"], m["splits"], m["run"]["epochs"])
                       for name, m in trained.items()},
                    "transfer": (used["dataset"], transfer_splits, None)},
                   found, standin, used["image_size"])
    # What identifies this run's configuration: the hyperparameters every stage recorded.
    recorded = {**{stage: r["params"] for stage, r in runs.items()},
                "svm": {k: results["svm"][k] for k in ("kernel", "C", "gamma")},
                **{f"tsne@{name}": m["tsne"]["settings"] for name, m in trained.items()},
                "tsne@transfer": separability["settings"]}
    points = separability[order[0]]["points"]
    return {
        "trained": trained, "runs": runs, "sources": found, "standin": standin, "caveats": said,
        "params_hash": hashlib.sha256(json.dumps(recorded, sort_keys=True).encode()).hexdigest(),
        "libraries": ", ".join(f"{lib} {importlib.metadata.version(lib)}" for lib in LIBRARIES),
        "transfer": {"dataset": used["dataset"], "image_size": used["image_size"],
                     "classes": datasets[used["dataset"]]["val"]["class_names"],
                     "splits": transfer_splits, "strategies": order,
                     "results": results, "devices": devices(transfer_runs.values()),
                     "separability": separability,
                     "ranking": judgements.ranking(results),
                     "extremes": judgements.extremes({s: separability[s] for s in order},
                                                     points),
                     "practical": PRACTICAL["transfer"]["accuracy"]}}
