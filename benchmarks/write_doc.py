"""docs/benchmarks.md from the benchmarks' own output: `make bench` (after the downloads).

    python -m benchmarks.write_doc [EPOCH_SPEED FLAGS ...]

Runs conv_weight_grad, epoch_speed (with the flags given) and transfer_speed, each in its own
process (`python -m benchmarks.<name>` in the repository's root), and writes their output under
a header naming the date, the CPU, its cores and the load at the start. A section a person
added after the benchmarks' block (`## GPU`: the GPU check's summary, docs/gpu.md) is kept.
The file is written whole or not at all: a benchmark that fails leaves it as it was, with one
line and exit status 1."""
import os
import subprocess
import sys
import time
from pathlib import Path

from stages.lib.core.files import write_atomic
from stages.lib.core.runtime import cpu_name

ROOT = Path(__file__).resolve().parents[1]

DOC = ROOT / "docs" / "benchmarks.md"
KEPT = "\n## GPU"   # from here on, the file is a person's, not the benchmarks'


def commands(flags):
    return [[sys.executable, "-m", "benchmarks.conv_weight_grad"],
            [sys.executable, "-m", "benchmarks.epoch_speed", *flags],
            [sys.executable, "-m", "benchmarks.transfer_speed"]]


def header():
    load = " ".join(Path("/proc/loadavg").read_text().split()[:3]) \
        if Path("/proc/loadavg").exists() else "unknown"
    day = time.strftime("%Y-%m-%d", time.gmtime())
    return (f"# Benchmarks\n\nWritten by `make bench` on {day} ({cpu_name()}, "
            f"{os.cpu_count()} cores, load average {load} at the start).\n"
            "Each line is the benchmark's own output; ratios compare against a reference run in\n"
            "the same process. History: `git log -p docs/benchmarks.md`. The whole practical,\n"
            "stage by stage: [full_run.md](full_run.md) (`make full-run`).\n")


def main(argv=None, runs=None, doc=DOC):
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] in (["-h"], ["--help"]):   # its own help, not epoch_speed's flags
        print(__doc__)
        return 0
    start = header()
    outputs = []
    for command in runs or commands(argv):
        result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
        sys.stdout.write(result.stdout)
        if result.returncode != 0:
            lines = [line for line in result.stderr.splitlines() if line.strip()]
            name = command[2] if command[1:2] == ["-m"] else \
                Path(command[1]).name if len(command) > 1 else command[0]
            print(f"make bench: {name} "
                  f"failed ({lines[-1] if lines else f'exit {result.returncode}'}); "
                  f"{doc.name} is unchanged", file=sys.stderr)
            return 1
        outputs.append(result.stdout.rstrip("\n"))
    old = doc.read_text() if doc.exists() else ""
    kept = old[old.index(KEPT):] if KEPT in old else ""
    text = start + "\n```\n" + "\n".join(outputs) + "\n```\n" + kept
    write_atomic(doc, text.encode())
    print(f"make bench: {doc.relative_to(ROOT) if doc.is_relative_to(ROOT) else doc} written")
    return 0


if __name__ == "__main__":
    sys.exit(main())
