"""dvc.yaml declares every source file a stage runs: the stage module and everything it imports
from stages.lib, directly or through another library module (docs/design.md: nothing a stage
reads is left undeclared, so editing a library module reruns exactly the stages that use it)."""
import ast
import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


def stages():
    """(name, cmd, deps) of every stage in dvc.yaml, foreach stages expanded."""
    for name, stage in yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"].items():
        if "foreach" not in stage:
            yield name, stage["cmd"], stage.get("deps", [])
            continue
        items = stage["foreach"]
        assert isinstance(items, dict), f"{name}: foreach over a list is not expanded here"
        for key, item in items.items():
            def fill(text, key=key, item=item):
                return text.replace("${key}", str(key)).replace("${item}", str(item))
            yield (f"{name}@{key}", fill(stage["do"]["cmd"]),
                   [fill(d) for d in stage["do"].get("deps", [])])


def local_imports(path):
    """The stages/ modules a source file imports (as paths relative to the project root)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = path.parent.relative_to(ROOT).parts
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = list(package[:len(package) - node.level + 1]) if node.level else []
            module = base + (node.module.split(".") if node.module else [])
            # `from stages.lib import data` imports stages/lib/core/data.py
            names = [".".join(module)] + [".".join(module + [a.name]) for a in node.names]
        else:
            continue
        for name in names:
            candidate = ROOT / (name.replace(".", "/") + ".py")
            if name.startswith("stages") and candidate.is_file():
                found.add(candidate.relative_to(ROOT).as_posix())
    return found


def sources(module_path):
    """The stage module and the stages/ modules it imports, transitively."""
    todo, seen = [module_path], set()
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        todo += local_imports(ROOT / path) - seen
    return {p for p in seen if not p.endswith("/__init__.py")}


def declared_code(deps):
    """The stages/ source files a stage's deps name: files, and every module of a folder."""
    found = set()
    for dep in deps:
        path = ROOT / dep
        if dep.startswith("stages/") and path.is_dir():
            found |= {p.relative_to(ROOT).as_posix() for p in path.rglob("*.py")
                      if p.name != "__init__.py"}
        elif dep.startswith("stages/") and dep.endswith(".py"):
            found.add(dep)
    return found


def test_local_imports_follow_relative_and_absolute_forms():
    assert {"stages/lib/core/models.py", "stages/lib/core/common.py",
            "stages/lib/core/params.py"} <= local_imports(ROOT / "stages/lib/core/engine.py")
    assert "stages/lib/core/data.py" in local_imports(ROOT / "stages/tsne.py")     # from x import y
    assert "stages/lib/core/models.py" in sources("stages/tsne.py")             # through engine


@pytest.mark.parametrize("name, cmd, deps", [pytest.param(*s, id=s[0]) for s in stages()])
def test_stage_declares_exactly_the_code_it_runs(name, cmd, deps):
    """Nothing it runs is left out (an edit would not rerun it), nothing it does not run is in
    (an edit would rerun it for nothing); a folder counts as all its modules."""
    match = re.fullmatch(r"python -m (stages\.\w+)( .*)?", cmd)
    assert match, f"{name}: unexpected command {cmd!r}"
    module = match.group(1).replace(".", "/") + ".py"
    runs, declared = sources(module), declared_code(deps)
    missing = sorted(runs - declared)
    assert not missing, f"{name} runs {', '.join(missing)} but does not declare it in dvc.yaml"
    extra = sorted(declared - runs)
    assert not extra, f"{name} declares {', '.join(extra)} in dvc.yaml but does not run it"


def test_a_folder_dependency_counts_every_module_in_it():
    core = declared_code(["stages/lib/core"])
    assert "stages/lib/core/engine.py" in core and "stages/lib/core/__init__.py" not in core
    assert core == {p.relative_to(ROOT).as_posix()
                    for p in (ROOT / "stages/lib/core").glob("*.py") if p.name != "__init__.py"}


def test_core_imports_nothing_of_the_library_outside_it():
    """So that declaring stages/lib/core stays exact: what core needs is in it."""
    for path in sorted((ROOT / "stages/lib/core").glob("*.py")):
        outside = sorted(p for p in local_imports(path) if not p.startswith("stages/lib/core/"))
        assert not outside, f"{path.name} imports {', '.join(outside)}"
