"""The README's results table, from the committed metrics and run records.

    python -m tools.results_table            # print the table
    python -m tools.results_table --check    # exit 1 when README.md's table differs

The README holds the output between the markers `<!-- results:start -->` and
`<!-- results:end -->`; tests/test_results_table.py checks that it is up to date, so the table
always says what the committed metrics say."""
import argparse
import json
import sys
from pathlib import Path

import yaml

from stages.lib.core import params, registry

ROOT = Path(__file__).resolve().parents[1]

START, END = "<!-- results:start -->", "<!-- results:end -->"
# The practical's parts, its models' names and its reference figures (its statement's, in its
# own form: percentages for the CNNs, fractions for part 3: stages/templates/practical.yaml),
# beside this run's; a model or strategy added to params.yaml gets a row under its own name
REFERENCE = yaml.safe_load((ROOT / "stages/templates/practical.yaml").read_text())
PRACTICAL = {**{m: f"{100 * v['accuracy']:.2f} %" for m, v in REFERENCE["models"].items()},
             **{s: f"{v:g}" for s, v in REFERENCE["transfer"]["accuracy"].items()}}
PARTS = {"simple_cnn": (1, "Simple CNN"), "alexnet": (2, "AlexNet-style")}
DATASETS = {"mnist": "MNIST", "cifar10": "CIFAR-10"}
TRANSFER = {"scratch": "from scratch", "svm": "ImageNet features + SVM",
            "finetune": "fine-tuned", "finetune_aug": "fine-tuned + augmentation"}


def read(path):
    path = ROOT / path
    return json.loads(path.read_text()) if path.is_file() else None


def pct(value):
    return f"{100 * value:.2f} %"


def table():
    rows = ["| part | model | parameters | accuracy (last epoch) | best (epoch) | practical | "
            "time |", "| --- | --- | --- | --- | --- | --- | --- |"]
    settings = params.load(ROOT / "params.yaml")
    strategies = registry.strategies(settings)
    for name, dataset in registry.models(settings).items():
        part, title = PARTS.get(name, ("", name))
        label = f"{title}, {DATASETS.get(dataset, dataset)}"
        m, run = read(f"metrics/{name}.json"), read(f"models/{name}.run.json")
        details = read(f"plots/{name}/evaluation.json")
        if m is None or run is None or details is None:
            rows.append(f"| {part} | {label} | | not run | | {PRACTICAL.get(name, '')} | |")
            continue
        rows.append(f"| {part} | {label}, {run['params']['epochs']} epochs | "
                    f"{details['params']:,} | **{pct(m['accuracy'])}** | "
                    f"{pct(m['best_accuracy'])} ({m['best_epoch']}) | {PRACTICAL.get(name, '')} | "
                    f"{run['seconds'] / 60:.1f} min |")
    for strategy in registry.report_order(strategies):
        label, practical = TRANSFER.get(strategy, strategy), PRACTICAL.get(strategy, "")
        m = read(f"metrics/transfer/{strategy}.json")
        run = read(f"models/transfer/{strategy}.run.json")
        if m is None:
            weights = strategy == "svm" or registry.STARTS[strategies[strategy]] == "imagenet"
            why = " (needs the ImageNet weights)" if weights else ""
            rows.append(f"| 3 | ResNet-50 {label} | | not run{why} | | {practical} | |")
            continue
        best = (f"{m['best_accuracy']:.3f} ({m['best_epoch']})" if "best_accuracy" in m
                else "")
        time = f"{run['seconds'] / 60:.1f} min" if run else ""
        rows.append(f"| 3 | ResNet-50 {label} | | **{m['accuracy']:.3f}** | {best} | "
                    f"{practical} | {time} |")
    machines = {}
    for path in sorted(ROOT.glob("models/**/*.run.json")):
        run = json.loads(path.read_text())
        where = (f"{run['cpu']} ({run['cpu_threads']} threads, {run['device']}, "
                 f"{run['precision']}), torch {run['torch']}")
        machines.setdefault(where, []).append(path.name.removesuffix(".run.json"))
    if not machines:
        return "\n".join(rows)
    said = "; ".join(f"{', '.join(names)} on {where}" if len(machines) > 1 else where
                     for where, names in machines.items())
    return ("\n".join(rows) + f"\n\nMeasured by `dvc repro` with the offline mirror and default "
            f"params, {said}; every run's record is in `models/**/*.run.json`.")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true")
    parser.add_argument("--readme", default=str(ROOT / "README.md"))
    args = parser.parse_args()
    text = table()
    if not args.check:
        print(text)
        return
    readme = Path(args.readme).read_text()
    if START not in readme or END not in readme:
        sys.exit(f"README.md has no {START} ... {END} section")
    current = readme.split(START, 1)[1].split(END, 1)[0].strip()
    if current != text:
        sys.exit("README.md's results table is out of date: run "
                 "`python -m tools.results_table` and paste its output between the markers")


if __name__ == "__main__":
    main()
