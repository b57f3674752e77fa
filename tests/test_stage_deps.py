"""dvc.yaml declares every source file a stage runs: the stage module and everything it imports
from stages.lib, directly or through another library module (docs/design.md: nothing a stage
reads is left undeclared, so editing a library module reruns exactly the stages that use it)."""
import ast
import re
from pathlib import Path

import pytest
from dvc.repo import Repo

ROOT = Path(__file__).resolve().parents[1]


def stages():
    """(name, cmd, deps) of every stage as DVC resolves dvc.yaml: foreach lists taken from
    params.yaml, ${...} filled in."""
    with Repo(str(ROOT)) as repo:
        return sorted((stage.addressing, stage.cmd, [dep.def_path for dep in stage.deps])
                      for stage in repo.index.stages)


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
            base = ROOT / name.replace(".", "/")
            for candidate in (base.with_suffix(".py"), base / "__init__.py"):
                if name.startswith("stages") and candidate.is_file():
                    found.add(candidate.relative_to(ROOT).as_posix())
    return found


def model_modules(path, stage_argument):
    """The model modules a source file loads by name (stages.lib.models.build or module): a
    name written in the call, or the stage's first argument where the call is given a
    variable (train@<model>, tsne@<model>)."""
    found = set()
    for node in ast.walk(ast.parse((ROOT / path).read_text())):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
                and isinstance(node.func.value, ast.Name) and node.func.value.id == "models" \
                and node.func.attr in ("build", "module") and node.args:
            name = node.args[0]
            if isinstance(name, ast.Constant):
                found.add(f"stages/lib/models/{name.value}.py")
            elif isinstance(name, ast.Name) and stage_argument:
                found.add(f"stages/lib/models/{stage_argument}.py")
    return found


def sources(module_path):
    """The stage module and the stages/ modules it imports, transitively (a package's
    __init__.py where it holds code)."""
    todo, seen = [module_path], set()
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        todo += local_imports(ROOT / path) - seen
    return {p for p in seen if (ROOT / p).stat().st_size or not p.endswith("/__init__.py")}


def declared_code(deps):
    """The stages/ source files a stage's deps name (a folder of sources would count as all
    of them, and an edit to any would rerun the stage: the deps name files)."""
    found = set()
    for dep in deps:
        path = ROOT / dep
        if dep.startswith("stages/") and path.is_dir():
            found |= {p.relative_to(ROOT).as_posix() for p in path.rglob("*.py")}
        elif dep.startswith("stages/") and dep.endswith(".py"):
            found.add(dep)
    return found


def runs(cmd):
    """The stages/ source files `python -m stages.<module> [args]` runs: the module, what it
    imports (transitively), and the model modules it loads by name."""
    match = re.fullmatch(r"python -m (stages\.\w+)( .*)?", cmd)
    assert match, f"unexpected command {cmd!r}"
    argument = (match.group(2) or "").split()[:1]
    code = sources(match.group(1).replace(".", "/") + ".py")
    return code | set().union(*(model_modules(p, argument[0] if argument else None)
                                for p in code))


def test_local_imports_follow_relative_and_absolute_forms():
    assert {"stages/lib/core/inference.py", "stages/lib/core/common.py",
            "stages/lib/core/params.py"} <= local_imports(ROOT / "stages/lib/core/engine.py")
    assert "stages/lib/core/data.py" in local_imports(ROOT / "stages/tsne.py")     # from x import y
    # a package: `from .. import models` is stages/lib/models/__init__.py, reached through
    # inference; an empty __init__.py is no code
    assert "stages/lib/models/__init__.py" in sources("stages/tsne.py")
    assert "stages/lib/core/__init__.py" not in sources("stages/tsne.py")


def test_model_modules_loaded_by_name_are_found():
    assert model_modules("stages/lib/transfer.py", None) == {"stages/lib/models/resnet50.py"}
    assert model_modules("stages/train.py", "alexnet") == {"stages/lib/models/alexnet.py"}
    assert "stages/lib/models/simple_cnn.py" in runs("python -m stages.tsne simple_cnn mnist")
    assert "stages/lib/models/alexnet.py" not in runs("python -m stages.tsne simple_cnn mnist")


@pytest.mark.parametrize("name, cmd, deps", [pytest.param(*s, id=s[0]) for s in stages()])
def test_stage_declares_exactly_the_code_it_runs(name, cmd, deps):
    """Nothing it runs is left out (an edit would not rerun it), nothing it does not run is in
    (an edit would rerun it for nothing)."""
    ran, declared = runs(cmd), declared_code(deps)
    missing = sorted(ran - declared)
    assert not missing, f"{name} runs {', '.join(missing)} but does not declare it in dvc.yaml"
    extra = sorted(declared - ran)
    assert not extra, f"{name} declares {', '.join(extra)} in dvc.yaml but does not run it"


def test_no_source_folder_is_a_dependency():
    """A folder of modules would make every module in it a dependency."""
    for name, _, deps in stages():
        folders = [d for d in deps if d.startswith("stages/") and (ROOT / d).is_dir()
                   and any((ROOT / d).rglob("*.py"))]
        assert not folders, f"{name} depends on the folder(s) {folders}: name the files"


def test_no_import_circles():
    """Each module can be read before the ones that import it (no module needs one that
    needs it back, however far round)."""
    modules = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "stages").rglob("*.py"))
    graph = {m: local_imports(ROOT / m) - {m} for m in modules}
    done, active = set(), []

    def visit(module):
        if module in active:
            circle = active[active.index(module):] + [module]
            pytest.fail("import circle: " + " -> ".join(circle))
        if module in done:
            return
        active.append(module)
        for other in sorted(graph.get(module, ())):
            visit(other)
        active.pop()
        done.add(module)

    for module in modules:
        visit(module)


def test_training_does_not_import_the_analysis_nor_the_report():
    """An edit to the t-SNE code or to the report's figures reruns no training."""
    for cmd in ("python -m stages.train alexnet cifar10", "python -m stages.transfer scratch x"):
        assert not {"stages/lib/analysis.py", "stages/lib/figures.py",
                    "stages/report.py"} & runs(cmd)
