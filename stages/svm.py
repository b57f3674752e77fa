"""Stage svm: an SVM on the frozen ImageNet features (transfer strategy "features + SVM").

    python -m stages.svm

Reads params `seed`, `transfer.svm.*` and data/features/{train,val}.pt. Fits
StandardScaler + SVC on train (optionally choosing SVC settings by cross-validated grid
search on train only) and scores it on val. Writes metrics/transfer/svm.json (accuracy) and
plots/transfer/svm/evaluation.json (train accuracy, the settings used, per-class accuracy, top
confusions), confusion.{csv,png}.
"""
from pathlib import Path

import torch
from sklearn.model_selection import GridSearchCV, StratifiedKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC

from stages.lib import plots
from stages.lib.core import data, params
from stages.lib.core.common import StageError, run

OUT = Path("plots/transfer/svm")


def main(argv):
    if argv:
        raise StageError("usage: python -m stages.svm")
    settings = params.load()
    cfg, seed = params.svm(settings), params.seed(settings)
    train, val = data.load_features("train"), data.load_features("val")
    classes = train["classes"]
    x_train, y_train = train["features"].numpy(), train["labels"].numpy()
    x_val, y_val = val["features"].numpy(), val["labels"].numpy()

    model = make_pipeline(StandardScaler(), SVC(kernel=cfg.kernel, C=cfg.C, gamma=cfg.gamma))
    chosen = {"kernel": cfg.kernel, "C": cfg.C, "gamma": cfg.gamma}
    result = {}
    if cfg.grid:
        folds = int(min(cfg.cv, min(torch.bincount(train["labels"]).tolist())))
        if folds < 2:
            raise StageError("transfer.svm.grid needs at least 2 training images per class")
        search = GridSearchCV(model, {f"svc__{k}": v for k, v in cfg.grid.items()},
                              cv=StratifiedKFold(folds, shuffle=True, random_state=seed))
        search.fit(x_train, y_train)
        model = search.best_estimator_
        chosen.update({k.removeprefix("svc__"): v for k, v in search.best_params_.items()})
        result["cv_accuracy"] = float(search.best_score_)
    else:
        model.fit(x_train, y_train)
    preds = model.predict(x_val)

    accuracy = float((preds == y_val).mean())
    plots.write_evaluation(OUT, "metrics/transfer/svm.json", y_val, preds, classes,
                           "ImageNet features + SVM",
                           details={"train_samples": len(y_train), "val_samples": len(y_val),
                                    "train_accuracy":
                                    float((model.predict(x_train) == y_train).mean()),
                                    **result, **chosen})
    print(f"svm ({', '.join(f'{k}={v}' for k, v in chosen.items())}): val accuracy "
          f"{accuracy:.4f}", flush=True)


if __name__ == "__main__":
    run(main)
