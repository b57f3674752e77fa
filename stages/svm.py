"""Stage svm: an SVM on the frozen ImageNet features (transfer strategy "features + SVM").

    python -m stages.svm

Reads params `seed`, `transfer.svm.*` and data/features/{train,val}.pt. Fits
StandardScaler + SVC on train (optionally choosing SVC settings by cross-validated grid
search on train only) and scores it on val. Writes metrics/transfer/svm.json (accuracy,
train accuracy, the settings used, per-class accuracy, top confusions) and
plots/transfer/svm/confusion.{csv,png}.
"""
import math
from pathlib import Path

import torch

from stages.lib import data, plots
from stages.lib.common import StageError, load_yaml, param, run, write_json

OUT = Path("plots/transfer/svm")
GRID_KEYS = {"C", "kernel", "gamma", "degree"}
KERNELS = ("linear", "rbf", "poly", "sigmoid")
GRID_VALUES = {"C": "numbers > 0", "kernel": f"one of {', '.join(KERNELS)}",
               "gamma": "scale, auto or numbers > 0", "degree": "integers >= 1"}


def svm_params(params):
    cfg = {"kernel": param(params, "transfer.svm.kernel", str, choices=KERNELS),
           "C": param(params, "transfer.svm.C", float, above=0),
           "gamma": param(params, "transfer.svm.gamma", object),
           "grid": param(params, "transfer.svm.grid", dict, optional=True),
           "cv": param(params, "transfer.svm.cv", int, minimum=2),
           "seed": param(params, "seed", int, minimum=0)}
    gamma = cfg["gamma"]
    if not grid_value_ok("gamma", gamma):
        raise StageError(f"params.yaml: 'transfer.svm.gamma' must be scale, auto or a number "
                         f"> 0, got {gamma!r}")
    for key, values in (cfg["grid"] or {}).items():
        if key not in GRID_KEYS or not isinstance(values, list) or not values:
            raise StageError(f"params.yaml: 'transfer.svm.grid' maps SVC settings "
                             f"({', '.join(sorted(GRID_KEYS))}) to non-empty lists; got "
                             f"{key}: {values!r}")
        for value in values:
            if not grid_value_ok(key, value):
                raise StageError(f"params.yaml: 'transfer.svm.grid.{key}' values must be "
                                 f"{GRID_VALUES[key]}; got {value!r}")
    return cfg


def grid_value_ok(key, value):
    number = isinstance(value, (int, float)) and not isinstance(value, bool) \
        and math.isfinite(value)
    if key == "C":
        return number and value > 0
    if key == "kernel":
        return value in KERNELS
    if key == "gamma":
        return value in ("scale", "auto") or (number and value > 0)
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def main(argv):
    if argv:
        raise StageError("usage: python -m stages.svm")
    from sklearn.model_selection import GridSearchCV, StratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    cfg = svm_params(load_yaml("params.yaml"))
    train, val = data.load_features("train"), data.load_features("val")
    classes = train["classes"]
    x_train, y_train = train["features"].numpy(), train["labels"].numpy()
    x_val, y_val = val["features"].numpy(), val["labels"].numpy()

    model = make_pipeline(StandardScaler(), SVC(kernel=cfg["kernel"], C=cfg["C"],
                                                gamma=cfg["gamma"]))
    chosen = {"kernel": cfg["kernel"], "C": cfg["C"], "gamma": cfg["gamma"]}
    result = {}
    if cfg["grid"]:
        folds = int(min(cfg["cv"], min(torch.bincount(train["labels"]).tolist())))
        if folds < 2:
            raise StageError("transfer.svm.grid needs at least 2 training images per class")
        search = GridSearchCV(model, {f"svc__{k}": v for k, v in cfg["grid"].items()},
                              cv=StratifiedKFold(folds, shuffle=True, random_state=cfg["seed"]))
        search.fit(x_train, y_train)
        model = search.best_estimator_
        chosen.update({k.removeprefix("svc__"): v for k, v in search.best_params_.items()})
        result["cv_accuracy"] = float(search.best_score_)
    else:
        model.fit(x_train, y_train)
    preds = model.predict(x_val)

    evaluation = plots.write_confusion(OUT, y_val, preds, classes, "ImageNet features + SVM")
    write_json("metrics/transfer/svm.json",
               {"accuracy": evaluation["accuracy"],
                "train_accuracy": float((model.predict(x_train) == y_train).mean()),
                **result, **chosen,
                "per_class_accuracy": evaluation["per_class_accuracy"],
                "top_confusions": evaluation["top_confusions"]})
    print(f"svm ({', '.join(f'{k}={v}' for k, v in chosen.items())}): val accuracy "
          f"{evaluation['accuracy']:.4f}")


if __name__ == "__main__":
    run(main)
