"""The documents name things that exist: every relative link of README.md and docs/*.md reaches
a file (and its #anchor a heading there), every project file path they mention exists, every
`make` target they name is the Makefile's, and every `module.function()` docs/design.md cites
is defined in that module."""
import re

import pytest

from helpers import ROOT

DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
PATH = re.compile(r"(?<![\w/.-])((?:stages|tools|tests|benchmarks|docs|notebooks|\.github|\.ci)"
                  r"/[\w./-]*\w)")
GENERATED = {"docs/benchmarks.md", "docs/full_run.md"}   # written by make bench / full-run


def slug(heading):
    """GitHub's anchor for a Markdown heading."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path):
    return {slug(line.lstrip("#")) for line in path.read_text().splitlines()
            if line.startswith("#")}


def ids(path):
    return path.relative_to(ROOT).as_posix()


@pytest.mark.parametrize("document", DOCUMENTS, ids=ids)
def test_links_reach_a_file_and_heading(document):
    text = document.read_text()
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+:", target):   # http(s), mailto: not checked offline
            continue
        file, _, anchor = target.partition("#")
        path = (document.parent / file).resolve() if file else document
        if not path.exists():
            broken.append(target)
        elif anchor and path.suffix == ".md" and anchor not in anchors(path):
            broken.append(target)
    assert broken == []


@pytest.mark.parametrize("document", [d for d in DOCUMENTS if ids(d) not in GENERATED],
                         ids=ids)
def test_project_paths_exist(document):
    named = set(PATH.findall(document.read_text()))
    missing = sorted(p for p in named if not (ROOT / p.rstrip(".")).exists()
                     and "<" not in p and "*" not in p)
    assert missing == []


def test_make_targets_exist():
    makefile = (ROOT / "Makefile").read_text()
    targets = set(re.findall(r"^([\w.-]+):", makefile, re.M))
    named = {t for d in DOCUMENTS for t in re.findall(r"`make ([a-z][\w-]*)", d.read_text())}
    assert named - targets == set()


def test_names_design_md_cites_exist():
    """`files.write_atomic`, `params.known_keys()`, `registry.STARTS`: defined in that module."""
    import yaml

    text = (ROOT / "docs" / "design.md").read_text()
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    modules = {p.stem: p for p in (ROOT / "stages").rglob("*.py")}
    missing = []
    for module, name in set(re.findall(r"[`(\s](\w+)\.([A-Za-z_]\w*)[`(]", text)):
        if name in ("json", "py", "yaml", "csv", "md", "png") or \
                isinstance(params.get(module), dict) and name in params[module]:
            continue   # a file name, or a params.yaml key (alexnet.lr)
        if module in modules and module != name:
            source = modules[module].read_text()
            if not re.search(rf"^(    )?(def|class) {name}\b|^{name}\b.*=", source, re.M):
                missing.append(f"{module}.{name}")
    assert missing == []
