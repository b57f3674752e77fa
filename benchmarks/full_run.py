"""The whole practical as a user runs it: `dvc repro --force` of every stage in a fresh clone of
this commit, each stage timed from DVC's own "Running stage" lines (process start-up, imports,
work and DVC's saving of the outputs included); writes the table to docs/full_run.md.

    DATASETS_MIRROR=DIR python -m benchmarks.full_run        # or online
    python -m benchmarks.full_run --keep-going                # stages that cannot run are listed

The clone lives in a temporary folder (--workdir to keep it): the workspace's results are not
touched. Stages that need the ImageNet weights run only where download@resnet50 can get them
(network, or the mirror); files accepted unverified (DATASETS_ACCEPT_UNVERIFIED, docs/data.md)
are named in the document, so random test weights are never mistaken for real ones.
"""
import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from stages.lib.core import params, registry
from stages.lib.core.runtime import cpu_name

ROOT = Path(__file__).resolve().parents[1]

OUT = ROOT / "docs" / "full_run.md"
RUNNING = re.compile(r"^Running stage '([^']+)':")


def weights_free(name):
    """A stage that runs without the ImageNet weights: a download other than theirs, the
    dataset table, every model's stages, the strategies that start from random weights."""
    strategies = registry.strategies(params.load(ROOT / "params.yaml"))
    kind, _, key = name.partition("@")
    return (kind == "download" and key != "resnet50") or kind in ("datasets", "train", "tsne") \
        or (kind == "transfer" and registry.STARTS.get(strategies.get(key)) == "random")


def timed_repro(workdir, keep_going, command=None):
    """Run `dvc repro --force` (or `command`) in `workdir`; returns ({stage: seconds}, status,
    its output). A stage's time runs from its "Running stage" line to the next one (or to the
    end)."""
    command = command or [sys.executable, "-m", "dvc", "repro", "--force"]
    if keep_going:
        command = [*command, "--keep-going"]
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    process = subprocess.Popen(command, cwd=workdir, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, bufsize=1)
    times, current, began, lines = {}, None, time.perf_counter(), []
    for line in process.stdout:
        print(line, end="", flush=True)
        lines.append(line)
        if match := RUNNING.match(line):
            now = time.perf_counter()
            if current:
                times[current] = now - began
            current, began = match.group(1), now
    status = process.wait()
    if current:
        times[current] = time.perf_counter() - began
    return times, status, "".join(lines)


def document(times, status, total, unverified):
    def row(name, seconds):
        return f"| {name} | {seconds:7.1f} | {seconds / 60:5.1f} |"

    free = sum(s for name, s in times.items() if weights_free(name))
    date = datetime.now(UTC).strftime("%Y-%m-%d")
    lines = [
        "# The whole practical, stage by stage",
        "",
        f"Written by `python -m benchmarks.full_run` on {date}: `dvc repro --force` of a fresh "
        f"clone, default params, {cpu_name()}, {os.cpu_count()} cores, load average "
        f"{os.getloadavg()[0]:.2f} at the end. Each stage's time runs from DVC's "
        "\"Running stage\" line to the next: start-up, imports, work and DVC's saving.",
    ]
    if unverified:
        lines += ["", f"Accepted unverified (DATASETS_ACCEPT_UNVERIFIED): {unverified}. Where "
                      "that names resnet50, the weights were not ImageNet's: the times hold, the "
                      "accuracies of the stages that use them do not (they are not shown here)."]
    if status != 0:
        lines += ["", f"`dvc repro` ended with status {status}: the stages below ran; the others "
                      "did not (their error is in the command's output)."]
    lines += ["", "| stage | seconds | minutes |", "|---|---:|---:|"]
    lines += [row(name, seconds) for name, seconds in times.items()]
    lines += [row("**weights-free part**", free), row("**whole run**", total), ""]
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keep-going", action="store_true",
                        help="go on past a stage that fails (dvc repro --keep-going)")
    parser.add_argument("--workdir", type=Path, default=None,
                        help="clone into this (new) folder and keep it (default: a temporary one)")
    args = parser.parse_args()
    if args.workdir is not None and args.workdir.exists():
        parser.error(f"--workdir {args.workdir} exists: give a new folder")
    with tempfile.TemporaryDirectory(prefix="full-run-") as scratch:
        workdir = args.workdir or Path(scratch) / "project"
        subprocess.run(["git", "clone", "--quiet", str(ROOT), str(workdir)], check=True)
        began = time.perf_counter()
        times, status, _ = timed_repro(workdir, args.keep_going)
        total = time.perf_counter() - began
    if not times:
        sys.exit("error: dvc repro ran no stage; docs/full_run.md is unchanged")
    OUT.write_text(document(times, status, total,
                            os.environ.get("DATASETS_ACCEPT_UNVERIFIED", "")))
    print(f"wrote {OUT.relative_to(ROOT)}: {total / 60:.1f} minutes in all")
    return 0 if status == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
