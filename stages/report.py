"""Stage report: the practical's written report, generated from this run's outputs.

    python -m stages.report

Reads metrics/ (datasets, models, t-SNE, transfer, and sources/: where each download came from
and whether it was verified), the stages' records in plots/ (dvclive's per-epoch curves,
confusion counts, t-SNE coordinates, evaluation details), models/**/*.run.json (the
hyperparameters each training stage used, device, precision, run times), the AlexNet
definition in stages/lib/models/alexnet.py and the params `models`, `strategies` (what was
trained: every model and strategy gets its section and rows), `report.language` (a file of
stages/templates/wording/) and `report.author` (the hand-in's name, or none).
Writes reports/report.md, reports/report.html (one file: its figures embedded, a print style
for a PDF: `make submission`), reports/figures/ (every figure the report shows, drawn here
from those records in the report's language: stages/lib/figures.py) and
reports/transfer_accuracy.csv (DVC's bar chart of the strategies).

The words are in stages/templates/: the document report.md.j2 (one for all languages), its
sentences in wording/<language>.yaml, the HTML page report.html.j2, and practical.yaml (the
practical's own settings and reference results). What the sentences conclude is
stages/lib/judgements.py's (rules with stated tolerances); this module gathers the inputs and
renders. The hyperparameters are the ones the stages recorded, not params.yaml's: a change to
`alexnet.lr` reruns the AlexNet stages and then this one because their outputs changed.
"""
import base64
import hashlib
import importlib.metadata
import inspect
import itertools
import json
import re
from pathlib import Path

import jinja2
import markdown
import yaml

from stages.lib import analysis, figures, judgements, models
from stages.lib.core import params, registry
from stages.lib.core.common import StageError, run
from stages.lib.core.files import read_json, staged_folder, write_csv
from stages.lib.wording import TEMPLATES, Language, author_of, languages

OUT = Path("reports")
SOURCES = Path("metrics/sources")   # download@<name>'s record of where its data came from
LIBRARIES = ("torch", "torchvision", "dvc", "dvclive", "scikit-learn", "numpy")
PRACTICAL = yaml.safe_load((TEMPLATES / "practical.yaml").read_text())
RULES = {"z": judgements.Z, "chance_loss": judgements.CHANCE_LOSS,
         "loss_tolerance": judgements.LOSS_TOLERANCE, "high_bias": judgements.HIGH_BIAS,
         "gap": judgements.GAP, "silhouette": judgements.SILHOUETTE_TOLERANCE,
         "separable": judgements.SEPARABLE, "small_gap": judgements.SMALL_GAP}

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


_FIGURE_SRC = re.compile(r'src="figures/([A-Za-z0-9_.-]+\.png)"')


def embedded(html, folder):
    """`html` with each of its figures (src="figures/<name>.png", files this stage drew into
    `folder`) embedded as a data: URI: one file that opens, mails and prints whole."""
    def inline(match):
        data = base64.b64encode((folder / match.group(1)).read_bytes()).decode()
        return f'src="data:image/png;base64,{data}"'
    return _FIGURE_SRC.sub(inline, html)


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
                     layer=lang.say(layer, dims=scores[layer]["dimensions"]).replace("*", ""),
                     points=lang.integer(len(labels)),
                     silhouette=lang.num(scores[layer]["silhouette"]),
                     probe=lang.pct(scores[layer]["probe"])))
    return {key: f"figures/{file}" for key, file in shown.items()}


def transfer_figures(lang, folder, dataset, classes, results, separability):
    """The figures of part 3, drawn into `folder`: accuracy by strategy, validation curves,
    t-SNE grid, the confusion matrices of every strategy in one grid. `classes`: the dataset's,
    in label order; `results`: each strategy's, in the report's order."""
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
    shown["confusion"] = figures.confusion_grid(
        lang, folder, "transfer_confusion.png",
        [(lang.say("figures.confusion_title", model=lang.strategy(s), epoch=results[s]["epochs"])
          if s in trained else lang.strategy(s), results[s]["counts"]) for s in results],
        dataset)
    return {key: f"figures/{file}" for key, file in shown.items()}


def transfer_csv(results, path):
    """reports/transfer_accuracy.csv: the accuracy of each strategy, for DVC's bar chart (drawn
    here, not in `compare`, so that a change to `transfer.svm.*` reruns only `svm` and this
    stage)."""
    write_csv(path, ["strategy", "accuracy", "best_accuracy"],
              ((s, r["accuracy"], r.get("best_accuracy", r["accuracy"]))
               for s, r in results.items()))


def devices(records):
    """The distinct (device, precision) of some run records, in order: a GPU by its name, else
    the device torch names (cpu, mps)."""
    return list(dict.fromkeys((r["gpu"] or r["device"], r["precision"]) for r in records))


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
    env.filters["download"] = language.download
    env.globals.update(t=language.say, diagnosis=judgements.diagnosis,
                       separable=judgements.separable,
                       next_figure=itertools.count(1).__next__)   # figures numbered in order
    return env


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


def main(argv):
    if argv:
        raise StageError("usage: python -m stages.report")
    settings = params.load()
    language, author = language_of(settings), author_of(settings)
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
    words = Language(language, standin=standin)
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
    params_hash = hashlib.sha256(json.dumps(recorded, sort_keys=True).encode()).hexdigest()
    libraries = ", ".join(f"{lib} {importlib.metadata.version(lib)}" for lib in LIBRARIES)
    classes = datasets[used["dataset"]]["val"]["class_names"]
    points = separability[order[0]]["points"]
    env = templates(words)
    # written whole: into a folder beside reports/, which then takes its place
    with staged_folder(OUT) as staging:
        (staging / "figures").mkdir()
        for m in trained.values():
            m["figures"] = model_figures(words, m, staging / "figures")
        transfer_csv(results, staging / "transfer_accuracy.csv")
        markdown_text = env.get_template("report.md.j2").render(
            author=author, params_hash=params_hash[:12], machine=next(iter(runs.values())),
            times=[(words.model(stage) if stage in trained else
                        words.say("transfer_stage", strategy=words.strategy(stage[9:])),
                        r["seconds"]) for stage, r in runs.items()],
            libraries=libraries, sources=found, caveats=said, rules=RULES,
            simple_cnn=simple_cnn, alexnet=alexnet, strategies=order,
            other_models=[m for name, m in trained.items()
                          if name not in ("simple_cnn", "alexnet")],
            alexnet_source=inspect.getsource(models.module("alexnet").AlexNet).rstrip()
            if alexnet else "",
            transfer={"dataset": used["dataset"], "image_size": used["image_size"],
                      "splits": transfer_splits,
                      "results": results, "devices": devices(transfer_runs.values()),
                      "separability": separability,
                      "ranking": judgements.ranking(results),
                      "extremes": judgements.extremes(
                          {s: separability[s] for s in order}, points),
                      "practical": PRACTICAL["transfer"]["accuracy"],
                      "figures": transfer_figures(words, staging / "figures", used["dataset"],
                                                  classes, results, separability)}
        ).strip() + "\n"
        (staging / "report.md").write_text(markdown_text)
        (staging / "report.html").write_text(embedded(env.get_template("report.html.j2").render(
            language=language, title=words.say("title"), author=author,
            body=to_html(markdown_text)), staging / "figures"))
    print(f"report: {OUT / 'report.md'} ({language}), {OUT / 'report.html'}", flush=True)


if __name__ == "__main__":
    run(main)
