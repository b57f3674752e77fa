"""`dvc plots show` and `dvc plots diff` with the project's page template (.dvc/plots/offline.html,
set as `plots.html_template` in .dvc/config): the pages load nothing from the network and their
Vega charts are drawn by a real headless browser that cannot resolve any host name. Also the
custom template .dvc/plots/confusion_counts.json: a confusion matrix from a table of cell
counts (one row per (actual, predicted) pair) draws the same cells as DVC's `confusion` template
from one row per sample.

The repo is a small temporary one with its own dvc.yaml `plots:` section, the project's
.dvc/config and .dvc/plots/, and two commits of plot data. The browser tests skip where no
Chromium is installed (Debian: apt-get install chromium; .ci/run installs it when root)."""
import collections
import hashlib
import html.parser
import json
import random
import re
import shutil
import subprocess
import sys

import pytest
import yaml

from helpers import ROOT, run, stage_env
from tools import vendor_vega

pytestmark = pytest.mark.e2e

PLOTS_DIR = ROOT / ".dvc" / "plots"
CLASSES = [str(c) for c in range(10)]

DVC_YAML = """\
plots:
  - Loss:
      template: linear
      x: step
      y:
        live/train/loss.tsv: loss
        live/val/loss.tsv: loss
  - Accuracy by strategy:
      template: bar_horizontal
      x: accuracy
      y:
        accuracy.csv: strategy
  - Confusion:
      template: confusion
      x: predicted
      y:
        confusion.csv: actual
  - Confusion counts:
      template: confusion_counts
      x: predicted
      y:
        confusion_counts.csv: actual
  - curves.png
"""
VEGA_PLOTS = 4


# The colours the charts are drawn in: DVC's first two revision colours (lines, bars, legends)
# and the dark blue end of the confusion matrices' colour scale (the diagonal).
def purple(r, g, b):
    return max(abs(r - 0x94), abs(g - 0x5d), abs(b - 0xd6)) <= 12


def cyan(r, g, b):
    return max(abs(r - 0x13), abs(g - 0xad), abs(b - 0xc7)) <= 12


def dark_blue(r, g, b):
    return r < 70 and g < 140 and b > 120


def samples(seed, n=300, accuracy=0.8):
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        actual = rng.choice(CLASSES)
        rows.append((actual, actual if rng.random() < accuracy else rng.choice(CLASSES)))
    return rows


def cells(rows):
    """{(actual, predicted): count} over the whole grid, zeros included (as the charts show)."""
    counts = collections.Counter(rows)
    return {(a, p): counts[a, p] for a in CLASSES for p in CLASSES}


def write_plots(repo, seed, zero_cells):
    from PIL import Image, ImageDraw

    rng = random.Random(seed)
    for split in ("train", "val"):
        path = repo / "live" / split / "loss.tsv"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("step\tloss\n" + "".join(
            f"{step}\t{rng.uniform(0.5, 1.5) / (step + 1):.4f}\n" for step in range(12)))
    (repo / "accuracy.csv").write_text("strategy,accuracy\n" + "".join(
        f"{name},{rng.uniform(0.5, 0.95):.3f}\n" for name in ("scratch", "svm", "finetune")))
    rows = samples(seed)
    (repo / "confusion.csv").write_text(
        "actual,predicted\n" + "".join(f"{a},{p}\n" for a, p in rows))
    # the whole grid (classes x classes rows), or only the cells that have samples (the template
    # fills in the zeros, as `confusion` does)
    table = cells(rows) if zero_cells else collections.Counter(rows)
    (repo / "confusion_counts.csv").write_text("actual,predicted,count\n" + "".join(
        f"{a},{p},{n}\n" for (a, p), n in sorted(table.items())))
    image = Image.new("RGB", (120, 80), "white")
    ImageDraw.Draw(image).line([(0, 70), (60, 30), (119, 10)], fill="black", width=3)
    image.save(repo / "curves.png")
    return rows


def dvc(repo, *args, check=True):
    return run([sys.executable, "-m", "dvc", *args], repo, stage_env(), timeout=300,
               check=check)


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    """A git + DVC repo with the project's DVC config and plot templates, two commits of plot
    data, and the pages of `dvc plots show` (second commit) and `dvc plots diff` (both)."""
    repo = tmp_path_factory.mktemp("offline-plots")
    env = stage_env()
    run(["git", "init", "-q"], repo, env)
    dvc(repo, "init", "-q")
    shutil.copy2(ROOT / ".dvc" / "config", repo / ".dvc" / "config")
    shutil.copytree(PLOTS_DIR, repo / ".dvc" / "plots")
    (repo / "dvc.yaml").write_text(DVC_YAML)
    rows = {}
    for rev, seed in (("first", 1), ("second", 2)):
        rows[rev] = write_plots(repo, seed, zero_cells=rev == "second")
        run(["git", "add", "."], repo, env)
        run(["git", "commit", "-q", "-m", rev], repo, env)
    dvc(repo, "plots", "show", "-o", "show")
    dvc(repo, "plots", "diff", "HEAD~1", "HEAD", "-o", "diff")
    return repo, rows


def page(repo, name):
    return (repo / name / "index.html").read_text(encoding="utf-8")


def embedded_specs(text):
    """{title: Vega-Lite spec} of the charts in a page that DVC wrote."""
    found = re.findall(r"var spec = (\{.*?\});\s*vegaEmbed\('#", text, re.S)
    specs = {}
    for spec in map(json.loads, found):
        title = spec["title"]["text"] if isinstance(spec["title"], dict) else spec["title"]
        specs[title] = spec
    return specs


# ---------------------------------------------------------------------------------------------
# The template and the config


def test_config_points_at_the_template(repo):
    repo, _ = repo
    setting = dvc(repo, "config", "plots.html_template").stdout.strip()
    assert setting == "plots/offline.html"  # DVC resolves it relative to .dvc/
    assert (repo / ".dvc" / setting).is_file()


def test_template_has_the_pinned_libraries_unmodified():
    """Each inlined library is the pinned version, with a license, and its code still has the
    sha256 its header records (the file was regenerated by tools/vendor_vega.py, not edited)."""
    text = (PLOTS_DIR / "offline.html").read_text(encoding="utf-8")
    assert text.count("{plot_divs}") == 1
    assert "{scripts}" not in text  # DVC would put its CDN <script src> tags there
    scripts = re.findall(r"<script>\n/\*! (\S+)@(\S+) .*?sha256 of the code below (\w+)\n"
                         r"(.*?)\*/\n(.*?)</script>", text, re.S)
    pinned = {name: version for name, (version, _) in vendor_vega.VERSIONS.items()}
    assert {name: version for name, version, *_ in scripts} == pinned
    for name, version, sha256, header, code in scripts:
        assert "Redistribution and use in source and binary forms" in header, name
        assert hashlib.sha256(code.encode()).hexdigest() == sha256, f"{name}@{version} edited"
        assert f'"{version}"' in code, name  # each build has its version string


# ---------------------------------------------------------------------------------------------
# The pages DVC writes


class Loads(html.parser.HTMLParser):
    """Every URL a page would fetch by itself (script/img/link/iframe/... attributes), and the
    inline scripts and styles."""
    URL_ATTRS = {"src", "href", "data", "srcset", "poster", "background", "action", "formaction"}

    def __init__(self):
        super().__init__()
        self.urls, self.script_srcs, self.inline = [], [], []
        self._tag = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "a":  # a link the reader may click; it loads nothing
            attrs.pop("href", None)
        self.urls += [value for name, value in attrs.items() if name in self.URL_ATTRS and value]
        if tag == "script" and "src" in attrs:
            self.script_srcs.append(attrs["src"])
        self._tag = tag

    def handle_data(self, data):
        if self._tag in ("script", "style"):
            self.inline.append(data)

    def handle_endtag(self, tag):
        self._tag = None


EXTERNAL = re.compile(r"^\s*([a-z][a-z0-9+.-]*:|//)", re.I)  # a scheme or a protocol-relative URL
LOADS_IN_CODE = [  # a script or style that fetches something by itself
    re.compile(r"""\bimport\s*\(\s*["'`](https?:)?//""", re.I),
    re.compile(r"""\bimport\s[^;]*?\bfrom\s*["'`](https?:)?//""", re.I),
    re.compile(r"""\bimportScripts\s*\(""", re.I),
    re.compile(r"""@import\b""", re.I),
    re.compile(r"""url\(\s*["']?(https?:)?//""", re.I),
    re.compile(r"""\b(fetch|open)\(\s*["'`]https?://""", re.I),
]


@pytest.mark.parametrize("name", ["show", "diff"])
def test_page_loads_nothing_from_the_network(repo, name):
    repo, _ = repo
    text = page(repo, name)
    loads = Loads()
    loads.feed(text)
    assert loads.script_srcs == []  # the libraries are inline, DVC's CDN tags are not there
    assert "cdn.jsdelivr.net" not in text
    external = [url for url in loads.urls
                if EXTERNAL.match(url) and not url.startswith("data:image/")]
    assert external == []
    images = [url for url in loads.urls if url.endswith(".png")]
    assert images and all((repo / name / url).is_file() for url in images)
    for code in loads.inline:
        for pattern in LOADS_IN_CODE:
            assert not pattern.search(code), pattern.search(code).group(0)
    assert len(embedded_specs(text)) == VEGA_PLOTS


def test_confusion_counts_embeds_one_row_per_cell(repo):
    """The counts table puts at most classes x classes rows per revision into the page, where
    `confusion` puts one row per sample."""
    repo, rows = repo
    specs = embedded_specs(page(repo, "diff"))
    per_rev = collections.Counter(row["rev"] for row in specs["Confusion"]["data"]["values"])
    assert per_rev == {"HEAD~1": len(rows["first"]), "HEAD": len(rows["second"])}
    counted = specs["Confusion counts"]["data"]["values"]
    for rev, label in (("first", "HEAD~1"), ("second", "HEAD")):
        got = {(r["actual"], r["predicted"]): int(r["count"])
               for r in counted if r["rev"] == label}
        assert {cell: n for cell, n in got.items() if n} == collections.Counter(rows[rev])
        assert len(got) <= len(CLASSES) ** 2 < len(rows[rev]) == 300


# ---------------------------------------------------------------------------------------------
# In a browser


def chromium():
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        if path := shutil.which(name):
            return path
    pytest.skip("no chromium: apt-get install chromium (Debian), to render the plots pages")


def browse(url, workdir, screenshot=None):
    """Open `url` in headless Chromium, with no host name resolvable (no network), until the
    page's scripts are done; returns (the DOM as HTML, the page's console messages)."""
    args = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
            "--disable-dev-shm-usage", f"--user-data-dir={workdir / 'chromium-profile'}",
            "--host-resolver-rules=MAP * ~NOTFOUND", "--virtual-time-budget=15000",
            "--enable-logging=stderr", "--v=0", "--dump-dom"]
    if screenshot:
        args += [f"--screenshot={screenshot}", "--window-size=1200,1600"]
    result = subprocess.run([*args, url], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    console = [line for line in result.stderr.splitlines() if ":CONSOLE" in line]
    return result.stdout, console


def pixels(png, colour):
    """How many pixels of the image are of the colour (a predicate on r, g, b)."""
    from PIL import Image

    image = Image.open(png).convert("RGB")
    return sum(n for n, pixel in image.getcolors(image.width * image.height) if colour(*pixel))


@pytest.mark.parametrize("name", ["show", "diff"])
def test_charts_are_drawn_in_a_browser_offline(repo, name, tmp_path):
    repo, _ = repo
    png = tmp_path / f"{name}.png"
    dom, console = browse((repo / name / "index.html").as_uri(), tmp_path, screenshot=png)
    errors = [line for line in console if re.search(r"Uncaught|Error|ERROR", line)]
    assert errors == []
    # vega-embed draws each chart into a <canvas class="marks">; a chart that failed has none
    assert len(re.findall(r'<canvas[^>]*class="marks"', dom)) == VEGA_PLOTS, console
    revs = 1 if name == "show" else 2
    assert len(re.findall(r'<img src="static/[^"]+_curves.png"', dom)) == revs
    # the screenshot (kept in pytest's tmp_path) shows lines/bars and the confusion matrices
    assert pixels(png, purple) > 2000, png
    assert pixels(png, dark_blue) > 3000, png
    if name == "diff":  # the second revision's lines and bars
        assert pixels(png, cyan) > 2000, png


COLLECT_CELLS = """
<div id="raw"></div><div id="counts"></div><pre id="cells"></pre>
<script>
function walk(item, found) {
  const d = item.datum;
  if (item.mark && item.mark.marktype === "rect" && d && "xy_count" in d)
    found.add(JSON.stringify([d.rev, d.actual, d.predicted, d.xy_count]));
  (item.items || []).forEach(child => walk(child, found));
}
const specs = {raw: SPEC_RAW, counts: SPEC_COUNTS};
Promise.all(Object.entries(specs).map(([id, spec]) =>
  vegaEmbed("#" + id, spec, {renderer: "svg"}).then(result => {
    const found = new Set();
    walk(result.view.scenegraph().root, found);
    return [id, [...found].map(JSON.parse)];
  })
)).then(pairs => {
  document.getElementById("cells").textContent = JSON.stringify(Object.fromEntries(pairs));
}, error => { document.getElementById("cells").textContent = "failed: " + error; });
</script>
"""


def test_confusion_counts_draws_the_same_cells_as_confusion(repo, tmp_path):
    """In the browser, with the inlined libraries: the cells (and their counts, zeros filled
    in) that `confusion_counts` draws from the counts tables of both revisions (one without its
    zero cells, one with them) are those `confusion` draws from the per-sample tables, and
    those of the samples."""
    repo, rows = repo
    specs = embedded_specs(page(repo, "diff"))
    body = (COLLECT_CELLS.replace("SPEC_RAW", json.dumps(specs["Confusion"]))
            .replace("SPEC_COUNTS", json.dumps(specs["Confusion counts"])))
    template = (PLOTS_DIR / "offline.html").read_text(encoding="utf-8")
    check = tmp_path / "cells.html"
    check.write_text(template.replace("{plot_divs}", body).replace("{refresh_tag}", ""),
                     encoding="utf-8")
    dom, console = browse(check.as_uri(), tmp_path)
    match = re.search(r'<pre id="cells">(.*?)</pre>', dom, re.S)
    assert match and match.group(1).startswith("{"), (match and match.group(1), console)
    drawn = json.loads(html.unescape(match.group(1)))
    expected = {(label, a, p, n) for rev, label in (("first", "HEAD~1"), ("second", "HEAD"))
                for (a, p), n in cells(rows[rev]).items()}
    assert len(expected) == 2 * len(CLASSES) ** 2
    assert {tuple(cell) for cell in drawn["raw"]} == expected
    assert {tuple(cell) for cell in drawn["counts"]} == expected


# Names from data in a page of `dvc plots show`: DVC puts the plot data, class names included,
# inside a <script> block as JSON, unescaped; a name holding "</script>" would end the block.

SCRIPT_PAYLOAD = "</script><script>document.title='PWNED'</script>"
ADMITTED = ["javascript:alert(1)", "${alert(2)}", "{{constructor.constructor(3)()}}",
            "a/*b*/c", "niño (ñ)", "x: y; z", "100%"]   # odd, yet allowed by the rule


def test_the_writers_refuse_a_name_that_would_end_the_script_block(tmp_path):
    import numpy as np

    from stages.lib import plots
    from stages.lib.core import names
    from stages.lib.core.common import StageError

    with pytest.raises(StageError, match="class names must not contain"):
        names.check_class_name(SCRIPT_PAYLOAD, "test")
    with pytest.raises(StageError, match="class named .*</script>"):
        plots.write_confusion(tmp_path, np.array([0, 1]), np.array([0, 1]),
                              ["cat", SCRIPT_PAYLOAD], "title")
    assert not (tmp_path / "confusion.csv").exists()


def test_a_plots_page_runs_no_script_from_class_names(tmp_path):
    """The oddest names the download rule admits, written by the stages' own confusion writer
    and shown with `dvc plots show`: in a browser the chart is drawn, the page's scripts are
    the template's (none added by data), its title is its own, and the names are data
    (strings in the chart's JSON), not code."""
    import numpy as np

    from stages.lib import plots
    from stages.lib.core import names

    for name in ADMITTED:
        names.check_class_name(name, "test")
    repo = tmp_path / "repo"
    repo.mkdir()
    env = stage_env()
    run(["git", "init", "-q"], repo, env)
    dvc(repo, "init", "-q")
    shutil.copy2(ROOT / ".dvc" / "config", repo / ".dvc" / "config")
    shutil.copytree(PLOTS_DIR, repo / ".dvc" / "plots", dirs_exist_ok=True)
    (repo / "dvc.yaml").write_text("plots:\n  - confusion.csv:\n      template: confusion_counts"
                                   "\n      x: predicted\n      y: actual\n")
    labels = np.arange(3 * len(ADMITTED)) % len(ADMITTED)
    plots.write_confusion(repo, labels, np.roll(labels, 1), ADMITTED, "odd names")
    dvc(repo, "plots", "show", "-o", "show")
    source = page(repo, "show")
    dom, console = browse((repo / "show" / "index.html").as_uri(), tmp_path)
    assert [line for line in console if re.search(r"Uncaught|Error|ERROR", line)] == []
    assert len(re.findall(r'<canvas[^>]*class="marks"', dom)) == 1
    # the template's own scripts, and no other (vegaEmbed replaces the chart's <div>, its
    # inline script included, by the drawn chart)
    template = (PLOTS_DIR / "offline.html").read_text()
    assert len(re.findall(r"<script", dom)) == len(re.findall(r"<script", template)) == 3
    assert "PWNED" not in dom and re.search(r"<title>DVC Plot</title>", dom)
    (spec,) = embedded_specs(source).values()
    shown = {row["actual"] for row in spec["data"]["values"]}
    assert shown == set(ADMITTED)


@pytest.fixture(scope="module")
def clone(tmp_path_factory):
    """A clone holding the committed results: no outputs of the stages that need the ImageNet
    weights (nor of the report)."""
    from readme_commands import clone_project

    return clone_project(tmp_path_factory.mktemp("show") / "project", None)


def show(project, *args):
    return subprocess.run([str(project / ".venv/bin/python"), "-m", "tools.show", *args],
                          cwd=project, capture_output=True, text=True, timeout=300)


def test_make_plots_draws_every_chart_it_lists_and_names_the_rest(clone, tmp_path):
    """`make plots` (tools/show.py): no empty chart, no DVC warning; one line for the files of
    stages not run; each model's train-against-validation chart, four curves by epoch."""
    result = show(clone, "plots", "--", "-o", "page")
    assert result.returncode == 0, result.stderr
    assert "DVC failed to load" not in result.stderr + result.stdout
    first = result.stdout.splitlines()[0]
    assert first.startswith("plots: left out ") and "transfer@finetune" in first, first
    text = (clone / "page" / "index.html").read_text(encoding="utf-8")
    assert "var spec = {}" not in text
    specs = embedded_specs(text)
    curves = specs["Simple CNN on MNIST, train and validation"]["data"]["values"]
    series = {row["filename::field"] for row in curves}
    assert series == {"train/loss.tsv::loss", "val/loss.tsv::loss",
                      "train/accuracy.tsv::accuracy", "val/accuracy.tsv::accuracy"}
    assert {int(row["step"]) for row in curves} == set(range(1, 11))
    assert "ResNet-50 fine-tuned, train and validation" not in specs   # not computed here
    if shutil.which("chromium") or shutil.which("chromium-browser") or \
            shutil.which("google-chrome"):
        dom, console = browse((clone / "page" / "index.html").as_uri(), tmp_path)
        assert [line for line in console if re.search(r"Uncaught|Error|ERROR", line)] == []
        assert len(re.findall(r'<canvas[^>]*class="marks"', dom)) == len(specs)


def test_make_metrics_shows_what_exists(clone):
    result = show(clone, "metrics")
    assert result.returncode == 0, result.stderr
    assert "DVC failed to load" not in result.stderr + result.stdout
    lines = result.stdout.splitlines()
    assert lines[0].startswith("metrics: left out ") and "svm" in lines[0]
    assert lines[1].split()[:2] == ["Path", "accuracy"]
    assert not any(line.split()[1:] == ["-"] * 5 for line in lines[2:])   # no empty rows


def test_every_trained_network_has_its_train_and_validation_chart():
    """dvc.yaml's top-level plots draw, for each model and strategy params.yaml trains, its
    dvclive loss and accuracy files, train and validation, on one chart by epoch."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    folders = [f"plots/{m}" for m in params["models"]] + \
        [f"plots/transfer/{s}" for s in params["strategies"]]
    charts = [next(iter(d.values())) for d in yaml.safe_load(
        (ROOT / "dvc.yaml").read_text())["plots"] if isinstance(d, dict)]
    for folder in folders:
        wanted = {f"{folder}/live/plots/metrics/{split}/{measure}.tsv": measure
                  for split in ("train", "val") for measure in ("loss", "accuracy")}
        assert any(c.get("y") == wanted and c.get("x") == "step" for c in charts), folder


def test_exp_show_errs_only_on_outputs_a_clone_cannot_have(clone):
    """`dvc exp show --json` (what VS Code's DVC extension reads): an error entry only for a
    metrics file that is not there (the stages that need the ImageNet weights), none for one
    that exists."""
    result = subprocess.run([str(clone / ".venv/bin/python"), "-m", "dvc", "exp", "show",
                             "--json"], cwd=clone, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    errors = []

    def walk(node, path):
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "error" and value:
                    errors.append(path)
                walk(value, key)
        elif isinstance(node, list):
            for value in node:
                walk(value, path)

    walk(json.loads(result.stdout), "")
    assert errors, "a clone without the weights lacks some metrics"
    assert all(path.startswith("metrics/") and not (clone / path).exists() for path in errors), \
        errors
