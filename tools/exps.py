"""`make exps`: the experiments side by side, in 120 columns.

    python -m tools.exps [--width N] [--all]     # make exps (EXPS_FLAGS=...)

`dvc exp show` prints every param and metric of every file under its full name
(`metrics/simple_cnn.json:best_accuracy`): 181 columns here, each cell cut to `…` at 120, and
a pager on a terminal. This takes DVC's own table (dvc.repo.experiments.show.tabulate) and
keeps what tells experiments apart: the params whose values differ, first, then the headline
metrics that differ (accuracy, best accuracy and its epoch of each model and strategy),
named short (`simple_cnn acc`, `scratch best`). The t-SNE scores, timestamps and deps
columns go; when the table is still wider than the terminal (120 columns when the output is
not one), the best-epoch, then the best-accuracy columns go, then the rest is cut by the
terminal's width as DVC would. `--all` keeps every column under DVC's own names. No pager."""
import argparse
import os
import re
import shutil
import sys

HEADLINE = {"accuracy": "acc", "best_accuracy": "best", "best_epoch": "ep"}
METRIC = re.compile(r"metrics/(?:transfer/)?(?P<name>[a-z0-9_]+)\.json:(?P<key>[a-z_]+)")
WIDTH = 120   # when stdout is not a terminal


def short(column, files):
    """A headline metric's column named `<model or strategy> acc|best|ep`, else None. DVC
    names a column `path:key`, or `key` alone when one file has it (`files`: key -> path)."""
    if ":" not in column and column in files:
        column = f"{files[column]}:{column}"
    match = METRIC.fullmatch(column)
    if match and match["key"] in HEADLINE and not column.startswith("metrics/tsne/"):
        return f"{match['name']} {HEADLINE[match['key']]}"
    return None


def metric_files(exps):
    """{metric key: the one metrics file that has it} over the experiments shown."""
    found = {}
    for exp in exps:
        for child in [exp, *[e for r in (exp.experiments or []) for e in r.revs]]:
            for path, record in ((child.data.metrics if child.data else None) or {}).items():
                for key in (record.get("data") or {}):
                    found.setdefault(key, set()).add(path)
    return {key: paths.pop() for key, paths in found.items() if len(paths) == 1}


def table(repo, width, every=False):
    """DVC's experiments table, reduced as the module's docstring says."""
    from dvc.repo.experiments.show import tabulate

    exps = repo.experiments.show()
    td, headers = tabulate(exps, precision=4, fill_value="-")
    if every:
        return td, headers
    files = metric_files(exps)
    for column in ("State", "Executor"):   # how a queued run ran: not what tells runs apart
        if column in td.keys():  # noqa: SIM118 (TabularData)
            td.column(column)[:] = ["-"] * len(td.column(column))
    def differs(column):
        return len({str(cell) for cell in td.column(column)}) > 1

    params = [c for c in headers["params"] if differs(c)]
    metrics = {c: name for c in headers["metrics"]
               if (name := short(c, files)) and differs(c)}
    kept = [c for c in ("Experiment", "rev", "typ", "parent", "State", "Executor")
            if c in td.keys()]  # noqa: SIM118 (TabularData)
    td.project(*kept, *params, *metrics)   # the params that differ first, then the metrics
    names = {**{p: two_lines(p) for p in params},
             **{m: two_lines(name) for m, name in metrics.items()}}
    for old, new in names.items():
        td.rename(old, new)
    headers = {"params": [names[p] for p in params],
               "metrics": [names[m] for m in metrics], "deps": []}
    for suffix in ("\nep", "\nbest"):   # narrower, column by column, while too wide
        while estimate(td) > width:
            column = next((c for c in td.keys() if c.endswith(suffix)), None)  # noqa: SIM118
            if column is None:
                break
            td.drop(column)
            headers["metrics"].remove(column)
    return td, headers


def two_lines(name):
    """A column's header on two lines, `simple_cnn.` over `train_samples`: half as wide."""
    cut = max(name.rfind("."), name.rfind(" "))
    return name if cut < 0 else f"{name[:cut + 1].rstrip()}\n{name[cut + 1:]}"


def estimate(td):
    """The width DVC's table takes: each column's widest cell or header line, and 3 between."""
    dropped = ("rev", "typ", "parent", "Experiment", "State", "Executor")   # merged or empty
    names = [c for c in td.keys() if c not in dropped]  # noqa: SIM118 (TabularData)
    widths = [max(len(line) for v in [name, *td.column(name)] for line in str(v).split("\n"))
              for name in names]
    experiment = max((len(f"{r} [{e}]") + 4 for e, r in zip(td.column("Experiment"),
                                                              td.column("rev"))), default=10)
    return experiment + sum(widths) + 3 * (len(widths) + 1)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--width", type=int, help="columns (default: the terminal's, or 120)")
    parser.add_argument("--all", action="store_true", help="every column, DVC's names")
    args = parser.parse_args(argv)
    width = args.width or (shutil.get_terminal_size((WIDTH, 24)).columns
                           if sys.stdout.isatty() else WIDTH)
    os.environ["COLUMNS"] = str(width)   # rich, which draws DVC's tables, reads it
    from dvc.commands.experiments.show import show_experiments
    from dvc.exceptions import DvcException
    from dvc.repo import Repo
    from dvc.ui import ui

    try:
        with Repo(os.getcwd()) as repo:
            td, headers = table(repo, width, args.all)
    except DvcException as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    ui.enable()   # DVC's console prints only once its command line enables it
    show_experiments(td, headers, pager=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
