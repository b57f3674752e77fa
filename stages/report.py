"""Stage report: the practical's written report, generated from this run's outputs.

    python -m stages.report

Reads metrics/ (datasets, models, t-SNE, transfer), the stages' records in plots/ (dvclive's
per-epoch curves, confusion counts, t-SNE coordinates, evaluation details),
models/**/*.run.json (the hyperparameters each training stage used, device, precision, run
times), the AlexNet definition in stages/lib/models/alexnet.py and the params `models`,
`strategies` (what was trained: every model and strategy gets its section and rows) and
`report.language` (a file of stages/templates/wording/).
Writes reports/report.md, reports/report.html, reports/figures/ (every figure it shows, drawn
here from those records in the report's language: stages/lib/figures.py) and
reports/transfer_accuracy.csv (DVC's bar chart of the strategies).

The words are in stages/templates/: the document report.md.j2 (one for all languages), its
sentences in wording/<language>.yaml and the HTML page report.html.j2. This module reads the
inputs, works out what the sentences say and writes the numbers the language's way. The
hyperparameters are the ones the stages recorded, not params.yaml's: a change to `alexnet.lr`
reruns the AlexNet stages and then this one because their outputs changed.
"""
import hashlib
import importlib.metadata
import inspect
import json
import re
from pathlib import Path

import jinja2
import markdown
import yaml

from stages.lib import analysis, figures, models
from stages.lib.core import params, registry
from stages.lib.core.common import StageError, run
from stages.lib.core.files import read_json, staged_folder, write_csv

OUT = Path("reports")
TEMPLATES = Path(__file__).parent / "templates"
LIBRARIES = ("torch", "torchvision", "dvc", "dvclive", "scikit-learn", "numpy")
SMALL_GAP = 1.0  # accuracy points: a linear probe this close to the network says "shrink it"


class Language:
    """The sentences of one language (templates/wording/<language>.yaml) and its numbers."""

    def __init__(self, language):
        self.words = yaml.safe_load((TEMPLATES / "wording" / f"{language}.yaml").read_text())
        self.decimal, self.thousands = self.words["decimal_mark"], self.words["thousands_mark"]

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
        """A strategy's name in this language; one the wording does not list (added to
        params.yaml's `strategies` without wording) is shown as params.yaml names it."""
        return self.say(f"strategies.{name}") if name in self.words["strategies"] else name

    def model(self, name):
        """A model's name in this language, or as params.yaml's `models` names it."""
        return self.say(f"models.{name}") if name in self.words["models"] else name

    def class_name(self, dataset, name):
        """A class of `dataset` in this language (wording `class_names`); a class the wording
        does not list (a dataset of your own) keeps its folder's name."""
        return self.words["class_names"].get(dataset, {}).get(name, name)

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
    converter = markdown.Markdown(extensions=["tables", "fenced_code"])
    converter.preprocessors.deregister("html_block")
    converter.inlinePatterns.deregister("html")
    return converter.convert(markdown_text)


def merged(metrics_path, details_path):
    """A metrics file (headline numbers) with its details file (what `dvc metrics show` does not
    need to show) merged in, one level deep: the whole record a stage wrote."""
    whole = read_json(metrics_path)
    for key, value in read_json(details_path).items():
        whole[key] = {**whole[key], **value} if isinstance(value, dict) and \
            isinstance(whole.get(key), dict) else value
    return whole


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
    ranked = sorted(results, key=lambda s: -results[s]["accuracy"])  # stable: ties keep order
    return [(s, results[s]["accuracy"],
             i > 0 and results[s]["accuracy"] == results[ranked[i - 1]]["accuracy"])
            for i, s in enumerate(ranked)]


def extremes(separability):
    """The strategies whose features separate the classes best and worst (by linear
    separability, then silhouette), or None with fewer than two scored."""
    scored = [s for s in separability if s != "settings"
              and None not in (separability[s]["silhouette"],
                              separability[s]["probe"])]
    if len(scored) < 2:
        return None
    order = sorted(scored, key=lambda s: (-separability[s]["probe"],
                                          -separability[s]["silhouette"]))
    return order[0], order[-1]


def counted(result, confusion_csv):
    """`result` (a metrics record) with `correct` and `images` from the confusion counts its
    accuracy was computed from (the report shows both, and they agree by construction), and
    `counts`, those counts (figures.read_confusion's classes and matrix) for the figure."""
    classes, matrix = figures.read_confusion(confusion_csv)
    return {**result, "correct": int(matrix.trace()), "images": int(matrix.sum()),
            "counts": (classes, matrix)}


def used_sizes(splits, record):
    """The dataset summary `splits` (metrics/datasets.json: the whole dataset) with `used`, the
    images a stage actually used (its record's train_samples/val_samples, after *_samples)."""
    return {split: {**s, "used": record.get(f"{split}_samples", s["samples"])}
            for split, s in splits.items()}


def model_figures(lang, m, folder):
    """The figures of model record `m` (parts 1 and 2, or a model of its own), in the report's
    language, drawn into `folder`."""
    name, dataset, scores = m["name"], m["dataset"], m["tsne"]
    title = lang.model(name)
    shown = {
        "curves": figures.curves(lang, folder, f"{name}_curves.png", f"plots/{name}/live",
                                 title),
        "confusion": figures.confusion(
            lang, folder, f"{name}_confusion.png", m["metrics"]["counts"], dataset,
            lang.say("figures.confusion_title", model=title, epoch=m["metrics"]["epochs"]))}
    points = figures.read_tsne(f"plots/{name}/tsne.csv", "layer")
    classes = m["splits"]["val"]["class_names"]
    for layer in ("intermediate", "final"):
        coords, labels = points[layer]
        shown[f"tsne_{layer}"] = figures.tsne(
            lang, folder, f"{name}_tsne_{layer}.png", coords, labels, classes, dataset,
            lang.say("figures.tsne_title", model=title,
                     layer=lang.say(layer, dims=scores[layer]["dimensions"]),
                     points=lang.integer(len(labels)),
                     silhouette=lang.num(scores[layer]["silhouette"]),
                     probe=lang.pct(scores[layer]["probe"])))
    return {key: f"figures/{file}" for key, file in shown.items()}


def transfer_figures(lang, folder, dataset, classes, results, separability):
    """The figures of part 3, drawn into `folder`: accuracy by strategy, validation curves,
    t-SNE grid, one confusion matrix per strategy. `classes`: the dataset's, in label order;
    `results`: each strategy's, in the report's order."""
    trained = [s for s in results if s != "svm"]
    shown = {
        "accuracy": figures.bars(lang, folder, "transfer_accuracy.png",
                                 {lang.strategy(s): results[s]["accuracy"] for s in results},
                                 lang.say("figures.accuracy_title"),
                                 lang.say("figures.accuracy")),
        "curves": figures.validation_curves(
            lang, folder, "transfer_curves.png",
            {lang.strategy(s): f"plots/transfer/{s}/live" for s in trained})}
    points = figures.read_tsne("plots/transfer/tsne.csv", "strategy")
    panels = [(*points[s], lang.say("figures.tsne_panel", strategy=lang.strategy(s),
                                    silhouette=lang.num(separability[s]["silhouette"]),
                                    probe=lang.pct(separability[s]["probe"])))
              for s in results]
    shown["tsne"] = figures.tsne_grid(
        lang, folder, "transfer_tsne.png", panels, classes, dataset,
        lang.say("figures.tsne_grid", points=lang.integer(len(panels[0][1]))))
    for s in results:
        title = lang.say("figures.confusion_title", model=lang.strategy(s),
                         epoch=results[s]["epochs"]) if s in trained \
            else lang.strategy(s)
        shown[f"confusion_{s}"] = figures.confusion(
            lang, folder, f"transfer_{s}_confusion.png", results[s]["counts"], dataset, title)
    return {key: f"figures/{file}" for key, file in shown.items()}


def transfer_csv(results, path):
    """reports/transfer_accuracy.csv: the accuracy of each strategy, for DVC's bar chart (drawn
    here, not in `compare`, so that a change to `transfer.svm.*` reruns only `svm` and this
    stage)."""
    write_csv(path, ["strategy", "accuracy", "best_accuracy"],
              ((s, r["accuracy"], r.get("best_accuracy", r["accuracy"]))
               for s, r in results.items()))


def devices(records):
    """The distinct "device, precision" of some run records, in order."""
    return list(dict.fromkeys(f"{r['gpu'] or r['device']}, {r['precision']}" for r in records))


def languages():
    """The report's languages: one wording file each, templates/wording/<language>.yaml."""
    return sorted(p.stem for p in (TEMPLATES / "wording").glob("*.yaml"))


def language_of(settings):
    return params.param(settings, "report.language", str, choices=languages())


def templates(language):
    """The Jinja2 environment: Markdown without autoescaping (data goes through |text), HTML
    with it; StrictUndefined, so a missing value stops the stage instead of vanishing."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES), undefined=jinja2.StrictUndefined,
        autoescape=jinja2.select_autoescape(enabled_extensions=("html.j2",), default=False),
        trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)
    env.filters.update(text=text, pct=language.pct, num=language.num, integer=language.integer,
                       plain=language.plain, strategy=language.strategy, model=language.model)
    env.filters["class_name"] = lambda name, dataset: language.class_name(dataset, name)
    env.globals.update(t=language.say)
    return env


def model(name, dataset, datasets, runs):
    """What the report says about a model trained from scratch on `dataset` (parts 1, 2)."""
    tsne = analysis.read_scores(f"metrics/tsne/{name}", f"plots/{name}/tsne.json",
                             ("intermediate", "final"))
    metrics = counted(merged(f"metrics/{name}.json", f"plots/{name}/evaluation.json"),
                      f"plots/{name}/confusion.csv")
    return {"name": name, "dataset": dataset, "splits": used_sizes(datasets[dataset], metrics),
            "metrics": metrics, "tsne": tsne, "run": runs[name]["params"],
            "devices": devices([runs[name]]), "better_layer": better_layer(tsne)}


def main(argv):
    if argv:
        raise StageError("usage: python -m stages.report")
    settings = params.load()
    language = language_of(settings)
    words = Language(language)
    trained_on, strategies = registry.models(settings), registry.strategies(settings)
    order = registry.report_order(strategies)
    runs = {**{m: read_json(f"models/{m}.run.json") for m in trained_on},
            **{f"transfer@{s}": read_json(f"models/transfer/{s}.run.json") for s in strategies}}
    datasets = read_json("metrics/datasets.json")
    # parts 1 and 2 have questions of their own; any other model gets the common sections
    trained = {m: model(m, dataset, datasets, runs) for m, dataset in trained_on.items()}
    simple_cnn, alexnet = trained.get("simple_cnn"), trained.get("alexnet")
    if simple_cnn:
        simple_cnn.update(smaller=smaller(simple_cnn["metrics"], simple_cnn["tsne"]))
    if alexnet:
        alexnet.update(curves=figures.read_curves("plots/alexnet/live"),
                       confused_pairs=confused_pairs(alexnet["metrics"]["top_confusions"]))
    results = {s: counted(merged(f"metrics/transfer/{s}.json",
                                 f"plots/transfer/{s}/evaluation.json"),
                          f"plots/transfer/{s}/confusion.csv")
               for s in order}
    separability = analysis.read_scores("metrics/tsne/transfer", "plots/transfer/tsne.json",
                                        order)
    transfer_runs = [runs[f"transfer@{s}"] for s in strategies]
    used = transfer_runs[0]["params"]
    # What identifies this run's configuration: the hyperparameters every stage recorded.
    recorded = {**{stage: r["params"] for stage, r in runs.items()},
                "svm": {k: results["svm"][k] for k in ("kernel", "C", "gamma")},
                **{f"tsne@{name}": m["tsne"]["settings"] for name, m in trained.items()},
                "tsne@transfer": separability["settings"]}

    params_hash = hashlib.sha256(json.dumps(recorded, sort_keys=True).encode()).hexdigest()
    libraries = ", ".join(f"{lib} {importlib.metadata.version(lib)}" for lib in LIBRARIES)
    classes = datasets[used["dataset"]]["val"]["class_names"]
    env = templates(words)
    # written whole: into a folder beside reports/, which then takes its place
    with staged_folder(OUT) as staging:
        (staging / "figures").mkdir()
        for m in trained.values():
            m["figures"] = model_figures(words, m, staging / "figures")
        transfer_csv(results, staging / "transfer_accuracy.csv")
        markdown_text = env.get_template("report.md.j2").render(
            params_hash=params_hash[:12], machine=next(iter(runs.values())), runs=runs,
            libraries=libraries, simple_cnn=simple_cnn, alexnet=alexnet, strategies=order,
            other_models=[m for name, m in trained.items()
                          if name not in ("simple_cnn", "alexnet")],
            alexnet_source=inspect.getsource(models.module("alexnet").AlexNet).rstrip(),
            transfer={"dataset": used["dataset"], "image_size": used["image_size"],
                      "splits": used_sizes(datasets[used["dataset"]], results["svm"]),
                      "results": results, "devices": devices(transfer_runs),
                      "separability": separability, "ranking": ranking(results),
                      "extremes": extremes(separability),
                      "figures": transfer_figures(words, staging / "figures", used["dataset"],
                                                  classes, results, separability)}
        ).strip() + "\n"
        (staging / "report.md").write_text(markdown_text)
        (staging / "report.html").write_text(env.get_template("report.html.j2").render(
            language=language, title=words.say("title"), body=to_html(markdown_text)))
    print(f"report: {OUT / 'report.md'} ({language}), {OUT / 'report.html'}", flush=True)


if __name__ == "__main__":
    run(main)
