"""Stage report: the practical's written report, generated from this run's outputs.

    python -m stages.report

Reads metrics/ (datasets, models, t-SNE, transfer), the per-epoch curves and figures in
plots/, models/**/*.run.json (the hyperparameters each training stage used, device, run
times), the AlexNet definition in stages/lib/models.py and the param `report.language`.
Writes reports/report.md, reports/report.html and reports/figures/ (the figures it shows).

The words are in stages/templates/: the document report.md.j2 (one for all languages), its
sentences in wording/<language>.yaml and the HTML page report.html.j2. This module reads the
inputs, works out what the sentences say and writes the numbers the language's way. The
hyperparameters are the ones the stages recorded, not params.yaml's: a change to `alexnet.lr`
reruns the AlexNet stages and then this one because their outputs changed.
"""
import csv
import hashlib
import importlib.metadata
import inspect
import json
import re
import shutil
from pathlib import Path

import jinja2
import yaml

from stages.lib import models, params, plots
from stages.lib.common import StageError, run
from stages.lib.files import read_json
from stages.lib.names import MODEL_DATASETS, STRATEGIES, TRAINED_STRATEGIES

OUT = Path("reports")
FIGURES = OUT / "figures"
TEMPLATES = Path(__file__).parent / "templates"
SEPARATORS = {"en": (".", ","), "es": (",", ".")}  # decimal point, thousands, per language
LIBRARIES = ("torch", "torchvision", "dvc", "dvclive", "scikit-learn", "numpy")
RUNS = {**{m: f"models/{m}.run.json" for m in MODEL_DATASETS},
        **{f"transfer@{s}": f"models/transfer/{s}.run.json" for s in TRAINED_STRATEGIES}}
SMALL_GAP = 1.0  # accuracy points: a linear probe this close to the network says "shrink it"


class Language:
    """The sentences of one language (templates/wording/<language>.yaml) and its numbers."""

    def __init__(self, language):
        self.words = yaml.safe_load((TEMPLATES / "wording" / f"{language}.yaml").read_text())
        self.decimal, self.thousands = SEPARATORS[language]

    def say(self, key, **fields):
        """The sentence at dotted `key` with its {fields} filled in. A plural ({one, other})
        is picked by the count `n`: `one` for exactly 1, in English as in Spanish."""
        sentence = self.words
        for part in key.split("."):
            sentence = sentence[part]
        if isinstance(sentence, dict):
            sentence = sentence["one" if fields["n"] == 1 else "other"]
            fields["n"] = self.integer(fields["n"])
        return sentence.format(**fields)

    def strategy(self, name):
        return self.say(f"strategies.{name}")

    def pct(self, x):
        return self.say("na") if x is None else f"{100 * x:.2f} %".replace(".", self.decimal)

    def num(self, x, digits=3):
        return self.say("na") if x is None else f"{x:.{digits}f}".replace(".", self.decimal)

    def integer(self, n):
        return f"{n:,}".replace(",", self.thousands)

    def plain(self, x):
        """A hyperparameter as written (a learning rate of 0.0005, not 5.000e-04)."""
        return f"{x:g}".replace(".", self.decimal) if isinstance(x, float) else str(x)


_MARKDOWN_SPECIAL = re.compile(r"([\\`*_\[\]<>&|])")


def text(value):
    """A string from data (class folder names, dataset names, the CPU model) as literal text in
    Markdown: the characters that make HTML tags, entities, links, emphasis, code or table
    cells become numeric entities, so a class named `<img src=x onerror=...>` or
    `[x](javascript:...)` is shown as written, never run."""
    return _MARKDOWN_SPECIAL.sub(lambda m: f"&#{ord(m.group(1))};", str(value))


def to_html(markdown_text):
    """Markdown to HTML with raw HTML switched off (it comes out escaped, as text): a second
    guard behind text(), should a data string ever reach the Markdown unescaped."""
    import markdown

    converter = markdown.Markdown(extensions=["tables", "fenced_code"])
    converter.preprocessors.deregister("html_block")
    converter.inlinePatterns.deregister("html")
    return converter.convert(markdown_text)


def read_curves(live_dir):
    """Per-epoch rows {epoch, train_loss, train_accuracy, val_loss, val_accuracy} from the
    dvclive TSV files of a training stage."""
    columns = {}
    for split in ("train", "val"):
        for what in ("loss", "accuracy"):
            path = Path(live_dir) / "plots" / "metrics" / split / f"{what}.tsv"
            if not path.is_file():
                raise StageError(f"{path} not found: run the training stage first (dvc repro)")
            with open(path, newline="") as f:
                rows = list(csv.DictReader(f, delimiter="\t"))
            columns[f"{split}_{what}"] = [float(row[what]) for row in rows]
            epochs = [int(row["step"]) for row in rows]   # dvclive's step is the epoch
    return [{"epoch": epoch, **{k: v[i] for k, v in columns.items()}}
            for i, epoch in enumerate(epochs)]


def figure(source):
    """Copy a figure next to the report; return its relative link."""
    source = Path(source)
    if not source.is_file():
        raise StageError(f"{source} not found: run the stage that draws it first (dvc repro)")
    target = FIGURES / "_".join(source.parts[1:])
    shutil.copyfile(source, target)
    return target.relative_to(OUT).as_posix()


def merged(metrics_path, details_path):
    """A metrics file (headline numbers) with its details file (what `dvc metrics show` does not
    need to show) merged in, one level deep: the whole record a stage wrote."""
    whole = read_json(metrics_path)
    for key, value in read_json(details_path).items():
        whole[key] = {**whole[key], **value} if isinstance(value, dict) and \
            isinstance(whole.get(key), dict) else value
    return whole


def transfer_accuracy(results, say):
    """The accuracy of the four strategies: reports/transfer_accuracy.csv (DVC's bar chart
    reads it) and a PNG for the report. Drawn here, not in `compare`, so that a change to
    `transfer.svm.*` reruns only `svm` and this stage."""
    with open(OUT / "transfer_accuracy.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["strategy", "accuracy", "best_accuracy"])
        writer.writerows((s, r["accuracy"], r.get("best_accuracy", r["accuracy"]))
                         for s, r in results.items())
    plots.save(plots.bar_figure({s: r["accuracy"] for s, r in results.items()}, "ResNet-50",
                                say("accuracy")), FIGURES / "transfer_accuracy.png")
    return "figures/transfer_accuracy.png"


def better_layer(tsne):
    """Which layer separates the classes better: "final" or "intermediate" where silhouette
    and linear probe agree, "mixed" where they do not, None where one is missing."""
    inter, final = tsne["intermediate"], tsne["final"]
    scores = [m[k] for m in (inter, final) for k in ("silhouette", "probe")]
    if None in scores:
        return None
    final_silhouette = final["silhouette"] >= inter["silhouette"]
    if final_silhouette != (final["probe"] >= inter["probe"]):
        return "mixed"
    return "final" if final_silhouette else "intermediate"


def smaller(metrics, tsne):
    """How near a linear classifier on the intermediate features comes to the whole network:
    "above" (no worse), "close" (within SMALL_GAP points), "below"; None if not measured."""
    probe = tsne["intermediate"]["probe"]
    if probe is None:
        return None
    gap = 100 * (metrics["best_accuracy"] - probe)
    return "above" if gap <= 0 else "close" if gap <= SMALL_GAP else "below"


def confused_pairs(top):
    """(class, class, count) of the three most confused unordered pairs (both directions)."""
    pairs = {}
    for c in top.values():
        key = tuple(sorted((c["true"], c["predicted"])))
        pairs[key] = pairs.get(key, 0) + c["count"]
    return [(a, b, n) for (a, b), n in sorted(pairs.items(), key=lambda kv: (-kv[1], kv[0]))][:3]


def ranking(results):
    """(strategy, accuracy, tied with the one before) by final accuracy, best first."""
    ranked = sorted(STRATEGIES, key=lambda s: -results[s]["accuracy"])  # stable: ties keep order
    return [(s, results[s]["accuracy"],
             i > 0 and results[s]["accuracy"] == results[ranked[i - 1]]["accuracy"])
            for i, s in enumerate(ranked)]


def extremes(separability):
    """The strategies whose features separate the classes best and worst (by linear
    separability, then silhouette), or None with fewer than two scored."""
    scored = [s for s in STRATEGIES
              if None not in (separability[s]["silhouette"],
                              separability[s]["probe"])]
    if len(scored) < 2:
        return None
    order = sorted(scored, key=lambda s: (-separability[s]["probe"],
                                          -separability[s]["silhouette"]))
    return order[0], order[-1]


def transfer_curves_figure(say):
    """Validation loss and accuracy per epoch of the trained strategies, side by side."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for strategy in TRAINED_STRATEGIES:
        curves = read_curves(f"plots/transfer/{strategy}/live")
        for ax, what in zip(axes, ("val_loss", "val_accuracy")):
            ax.plot([r["epoch"] for r in curves], [r[what] for r in curves], "o-",
                    label=say(f"strategies.{strategy}"))
    for ax, what in zip(axes, ("val_loss", "val_accuracy")):
        ax.set_xlabel(say("epoch"))
        ax.set_ylabel(say(what))
        plots.integer_epochs(ax)
        ax.grid(alpha=0.3)
        ax.legend()
    plots.save(fig, FIGURES / "transfer_curves.png")
    return "figures/transfer_curves.png"


def templates(language):
    """The Jinja2 environment: Markdown without autoescaping (data goes through |text), HTML
    with it; StrictUndefined, so a missing value stops the stage instead of vanishing."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES), undefined=jinja2.StrictUndefined,
        autoescape=jinja2.select_autoescape(enabled_extensions=("html.j2",), default=False),
        trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)
    env.filters.update(text=text, pct=language.pct, num=language.num, integer=language.integer,
                       plain=language.plain, strategy=language.strategy)
    env.globals.update(t=language.say, figure=figure)
    return env


def model(name, datasets, runs):
    """What the report says about a model trained from scratch (parts 1 and 2)."""
    tsne = plots.read_scores(f"metrics/tsne/{name}", f"plots/{name}/tsne.json",
                             ("intermediate", "final"))
    return {"name": name, "splits": datasets[MODEL_DATASETS[name]],
            "metrics": merged(f"metrics/{name}.json", f"plots/{name}/evaluation.json"),
            "tsne": tsne,
            "run": runs[name]["params"], "better_layer": better_layer(tsne)}


def main(argv):
    if argv:
        raise StageError("usage: python -m stages.report")
    language = params.report_language(params.load())
    words = Language(language)
    runs = {stage: read_json(path) for stage, path in RUNS.items()}
    datasets = read_json("metrics/datasets.json")
    simple_cnn, alexnet = model("simple_cnn", datasets, runs), model("alexnet", datasets, runs)
    simple_cnn.update(smaller=smaller(simple_cnn["metrics"], simple_cnn["tsne"]))
    alexnet.update(curves=read_curves("plots/alexnet/live"),
                   confused_pairs=confused_pairs(alexnet["metrics"]["top_confusions"]))
    results = {s: merged(f"metrics/transfer/{s}.json", f"plots/transfer/{s}/evaluation.json")
               for s in STRATEGIES}
    separability = plots.read_scores("metrics/tsne/transfer", "plots/transfer/tsne.json",
                                     STRATEGIES)
    used = runs[f"transfer@{TRAINED_STRATEGIES[0]}"]["params"]
    # What identifies this run's configuration: the hyperparameters every stage recorded.
    recorded = {**{stage: r["params"] for stage, r in runs.items()},
                "svm": {k: results["svm"][k] for k in ("kernel", "C", "gamma")},
                **{f"tsne@{m['name']}": m["tsne"]["settings"] for m in (simple_cnn, alexnet)},
                "tsne@transfer": separability["settings"]}

    if OUT.exists():
        shutil.rmtree(OUT)
    FIGURES.mkdir(parents=True)
    env = templates(words)
    markdown_text = env.get_template("report.md.j2").render(
        params_hash=hashlib.sha256(json.dumps(recorded, sort_keys=True).encode()).hexdigest()[:12],
        machine=next(iter(runs.values())), runs=runs,
        libraries=", ".join(f"{lib} {importlib.metadata.version(lib)}" for lib in LIBRARIES),
        simple_cnn=simple_cnn, alexnet=alexnet, strategies=STRATEGIES,
        alexnet_source=inspect.getsource(models.AlexNet).rstrip(),
        transfer={"dataset": used["dataset"], "image_size": used["image_size"],
                  "splits": datasets[used["dataset"]], "results": results,
                  "separability": separability, "ranking": ranking(results),
                  "extremes": extremes(separability),
                  "curves_figure": transfer_curves_figure(words.say),
                  "accuracy_figure": transfer_accuracy(results, words.say)}).strip() + "\n"
    (OUT / "report.md").write_text(markdown_text)
    (OUT / "report.html").write_text(env.get_template("report.html.j2").render(
        language=language, title=words.say("title"), body=to_html(markdown_text)))
    print(f"report: {OUT / 'report.md'} ({language}), {OUT / 'report.html'}", flush=True)


if __name__ == "__main__":
    run(main)
