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
stages/lib/judgements.py's (rules with stated tolerances); stages/lib/records.py gathers the
inputs, stages/lib/render.py makes text and HTML of them; this module draws the figures and
writes the report. The hyperparameters are the ones the stages recorded, not params.yaml's: a
change to `alexnet.lr` reruns the AlexNet stages and then this one because their outputs
changed.
"""
import inspect
from pathlib import Path

from stages.lib import figures, judgements, models, records
from stages.lib.core import params
from stages.lib.core.common import StageError, run
from stages.lib.core.files import staged_folder, write_csv
from stages.lib.core.param_keys import param
from stages.lib.render import embedded, templates, to_html
from stages.lib.wording import Language, author_of, languages

OUT = Path("reports")
RULES = {"z": judgements.Z, "chance_loss": judgements.CHANCE_LOSS,
         "loss_tolerance": judgements.LOSS_TOLERANCE, "high_bias": judgements.HIGH_BIAS,
         "gap": judgements.GAP, "silhouette": judgements.SILHOUETTE_TOLERANCE,
         "separable": judgements.SEPARABLE, "small_gap": judgements.SMALL_GAP}


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


def language_of(settings):
    return param(settings, "report.language", str, choices=languages())


def main(argv):
    if argv:
        raise StageError("usage: python -m stages.report")
    settings = params.load()
    language, author = language_of(settings), author_of(settings)
    inputs = records.gather(settings)
    trained, runs, transfer = inputs["trained"], inputs["runs"], inputs["transfer"]
    simple_cnn, alexnet = trained.get("simple_cnn"), trained.get("alexnet")
    words = Language(language, standin=inputs["standin"])
    env = templates(words)
    # written whole: into a folder beside reports/, which then takes its place
    with staged_folder(OUT) as staging:
        (staging / "figures").mkdir()
        for m in trained.values():
            m["figures"] = model_figures(words, m, staging / "figures")
        transfer_csv(transfer["results"], staging / "transfer_accuracy.csv")
        transfer["figures"] = transfer_figures(
            words, staging / "figures", transfer["dataset"], transfer["classes"],
            transfer["results"], transfer["separability"])
        markdown_text = env.get_template("report.md.j2").render(
            author=author, params_hash=inputs["params_hash"][:12],
            machine=next(iter(runs.values())),
            times=[(words.model(stage) if stage in trained else
                        words.say("transfer_stage", strategy=words.strategy(stage[9:])),
                        r["seconds"]) for stage, r in runs.items()],
            libraries=inputs["libraries"], sources=inputs["sources"], caveats=inputs["caveats"],
            rules=RULES, simple_cnn=simple_cnn, alexnet=alexnet,
            strategies=transfer["strategies"],
            other_models=[m for name, m in trained.items()
                          if name not in ("simple_cnn", "alexnet")],
            alexnet_source=inspect.getsource(models.module("alexnet").AlexNet).rstrip()
            if alexnet else "",
            transfer=transfer).strip() + "\n"
        (staging / "report.md").write_text(markdown_text)
        (staging / "report.html").write_text(embedded(env.get_template("report.html.j2").render(
            language=language, title=words.say("title"), author=author,
            body=to_html(markdown_text)), staging / "figures"))
    print(f"report: {OUT / 'report.md'} ({language}), {OUT / 'report.html'}", flush=True)


if __name__ == "__main__":
    run(main)
