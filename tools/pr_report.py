"""A pull request's results against its base, as one Markdown file for a PR comment:

    python -m tools.pr_report --base origin/main [--out pr_report]

CI (.github/workflows/pull-request.yml) posts OUT/report.md with CML (`cml comment create
--publish`, which uploads the pictures it links). It holds, from DVC's own commands run here:
- the params that changed (`dvc params diff BASE --md`),
- the metrics that changed (`dvc metrics diff BASE --md`: old, new, change),
- each picture plot (curves, confusion matrices, t-SNE) whose bytes changed, base and this
  branch side by side (`dvc plots diff BASE --json -o OUT/plots`); the interactive (Vega) plots
  are in OUT/plots/index.html, which CI keeps as a build artifact.
Nothing changed: it says so. Compared is the working tree (the PR's head) with BASE, both read
from git: the metrics and plots the pipeline keeps in git, no DVC remote needed. Exit 1, with
one line, when BASE is not a commit or a DVC command fails."""
import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path


def fail(message):
    print(f"pr_report: error: {message}", file=sys.stderr)
    sys.exit(1)


def dvc(*args):
    result = subprocess.run([sys.executable, "-m", "dvc", *args], capture_output=True,
                            text=True, env={**os.environ, "DVC_NO_ANALYTICS": "1"})
    if result.returncode != 0:
        lines = result.stderr.strip().splitlines()
        fail(f"dvc {' '.join(args)}: {lines[-1] if lines else f'exit {result.returncode}'}")
    return result.stdout.strip()


def changed_pictures(plots, base, out):
    """[(plot path, base picture, head picture)] of the picture plots whose bytes differ
    (a picture only one side has counts as changed); paths relative to `out`."""
    changed = []
    for path, renders in sorted(plots.get("data", {}).items()):
        pictures = {r["revisions"][0]: Path(r["url"]) for r in renders
                    if r.get("type") == "image"}
        if not pictures:
            continue
        old, new = pictures.get(base), pictures.get("workspace")
        if old and new and old.read_bytes() == new.read_bytes():
            continue
        changed.append((path, *(p.relative_to(out).as_posix() if p else None
                                for p in (old, new))))
    return changed


def report(base, out):
    found = subprocess.run(["git", "rev-parse", "--verify", "--quiet", f"{base}^{{commit}}"],
                           capture_output=True)
    if found.returncode != 0:
        fail(f"{base} is not a commit here (fetch it: git fetch origin)")
    # DVC calls the working tree `workspace`: in CI that is the pull request's head
    params = dvc("params", "diff", base, "--md").replace(" workspace ", " this branch ", 1)
    metrics = dvc("metrics", "diff", base, "--md").replace(" workspace ", " this branch ", 1)
    shutil.rmtree(out / "plots", ignore_errors=True)
    dvc("plots", "diff", base, "-o", str(out / "plots"))    # index.html: every plot, both sides
    plots = json.loads(dvc("plots", "diff", base, "--json", "-o", str(out / "plots")) or "{}")
    pictures = changed_pictures(plots, base, out)
    lines = [f"## Results against `{base}`", ""]
    lines += ["### Params", "", params, ""] if params else ["Params: unchanged.", ""]
    lines += ["### Metrics", "", metrics, ""] if metrics else ["Metrics: unchanged.", ""]
    if pictures:
        lines += ["### Pictures that changed", "", f"| plot | {base} | this branch |",
                  "|---|---|---|"]
        lines += [f"| `{path}` | {f'![]({old})' if old else 'none'} | "
                  f"{f'![]({new})' if new else 'none'} |" for path, old, new in pictures]
    else:
        lines += ["Pictures: unchanged."]
    lines += ["", "The interactive plots (learning curves, confusion matrices) of both sides: "
              "`plots/index.html` in this run's artifacts (`dvc plots diff` locally)."]
    (out / "report.md").write_text("\n".join(lines) + "\n")
    return out / "report.md"


def main(argv=None):
    parser = argparse.ArgumentParser(prog="pr_report", description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", required=True, help="the commit to compare with")
    parser.add_argument("--out", type=Path, default=Path("pr_report"))
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    path = report(args.base, args.out.resolve())
    print(f"pr_report: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
