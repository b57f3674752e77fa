"""`dvc plots` and `dvc metrics` on what exists: no empty chart, no warning per missing file.

    python -m tools.show plots [REV ...]      # make plots: dvc plots show, or diff with REVs
    python -m tools.show metrics [REV ...]    # make metrics: dvc metrics show, or diff

A clone without the ImageNet weights has no outputs for the stages that need them, and every
record the report reads is declared as a plot (it has to be a plot or a metric to stay in
DVC's run-cache, and it holds no table): plain `dvc plots show` then warns `DVC failed to load
some plots` and leaves an empty chart for each. This passes DVC
only the plots that can be drawn: picture files, tables with their axes or template (dvclive's
curves, the confusion counts) and dvc.yaml's top-level charts, each whose files are all there;
and the metrics files that are there. What is left out because it is not computed yet is named
in one line, with the stages that compute it. Everything else is DVC's own command and output
(dvc_plots/index.html; --json and other DVC options pass through after `--`)."""
import os
import subprocess
import sys
from pathlib import Path

PICTURES = {".png", ".jpg", ".jpeg", ".svg", ".gif"}


def drawable(out):
    """Whether the plot output `out` is a picture or a table with axes or a template."""
    props = out.plot if isinstance(out.plot, dict) else {}
    return Path(str(out.def_path)).suffix.lower() in PICTURES or bool(
        {"x", "y", "template"} & set(props))


def top_level_files(definition):
    """The files a top-level plot of dvc.yaml reads: (plot id, [files])."""
    if isinstance(definition, str):
        return definition, [definition]
    (name, props), = definition.items()
    props = props or {}
    files = []
    for axis in ("x", "y"):
        if isinstance(props.get(axis), dict):
            files += list(props[axis])
    return name, files or [name]


def targets(repo, kind):
    """(targets to pass DVC, {missing file: stage that writes it})."""
    import yaml

    writer = {str(out.def_path): stage.addressing for stage in repo.index.stages
              for out in stage.outs}
    root = Path(repo.root_dir)
    wanted = (lambda out: out.is_metric) if kind == "metrics" else \
        (lambda out: out.is_plot and drawable(out))
    missing, chosen = {}, []
    for stage in repo.index.stages:
        for out in filter(wanted, stage.outs):
            path = str(out.def_path)
            if (root / path).exists():
                chosen.append(path)
            else:
                missing[path] = stage.addressing
    if kind == "metrics":
        return chosen, missing
    pipeline = yaml.safe_load((root / "dvc.yaml").read_text())
    for definition in pipeline.get("plots") or []:
        name, files = top_level_files(definition)
        absent = [f for f in files if not (root / f).exists()]
        if absent:   # a file of a declared output, or inside a declared folder
            missing.update({f: next((s for o, s in writer.items()
                                     if f == o or f.startswith(o + "/")), "?") for f in absent})
        else:
            chosen.append(name)
    return chosen, missing


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[:argv.index("--")] if "--" in argv else argv
    if not argv or argv[0] not in ("plots", "metrics"):
        print("usage: python -m tools.show plots|metrics [REV ...] [-- DVC OPTIONS]",
              file=sys.stderr)
        return 2
    kind, revs = argv[0], argv[1:]
    from dvc.repo import Repo

    with Repo(os.getcwd()) as repo:
        chosen, missing = targets(repo, kind)
    if missing:
        stages = sorted(set(missing.values()))
        print(f"{kind}: left out {len(missing)} files not computed yet (by "
              f"{', '.join(stages)}; `make repro` names what each needs)", flush=True)
    if not chosen:
        print(f"{kind}: nothing to show yet: `make repro` computes it", file=sys.stderr)
        return 1
    command = [sys.executable, "-m", "dvc", kind, "diff" if revs else "show", *revs]
    command += ["--targets", *chosen] if revs else chosen
    return subprocess.run([*command, *extra]).returncode


if __name__ == "__main__":
    os.environ.setdefault("DVC_NO_ANALYTICS", "1")
    sys.exit(main())
