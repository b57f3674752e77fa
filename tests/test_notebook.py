"""notebooks/quickstart.ipynb, executed inside a temporary checkout on the tiny mirror (the run
smoke_project.py shares with tests/test_smoke.py): every cell runs, it uses that checkout
instead of cloning, it shows the metrics table and the plots, and it says why there is no
report (no ImageNet weights in that mirror)."""
import pytest
from smoke_project import cell_with, smoke_run, text

pytestmark = pytest.mark.e2e

SIMPLE_CNN_PLOTS = 3   # curves, confusion, t-SNE: the sub-graph's main plots


@pytest.fixture(scope="module")
def executed(tmp_path_factory, mirror):
    result = smoke_run(tmp_path_factory, mirror)
    return result.project, result.notebook


def shown(cell, mime):
    return [out["data"][mime] for out in cell.get("outputs", [])
            if out["output_type"] == "display_data" and mime in out["data"]]


def test_every_code_cell_ran(executed):
    _, notebook = executed
    cells = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert all(cell.execution_count for cell in cells)
    for cell in cells:
        text(cell)   # raises on a cell's error, with its output


def test_it_uses_the_checkout_it_is_in(executed):
    project, notebook = executed
    setup = text(cell_with(notebook, "ROOT = checkout()"))
    assert setup.startswith(f"project: {project}\n") and "git clone" not in setup


def test_it_shows_the_metrics_table(executed):
    _, notebook = executed
    [table] = shown(cell_with(notebook, "dvc metrics show"), "text/markdown")
    assert table.startswith("| Path ")
    for name in ("smoke/metrics/simple_cnn.json", "smoke/metrics/tsne/simple_cnn/final.json",
                 "best_accuracy", "probe"):
        assert name in table


def test_it_shows_the_main_plots(executed):
    _, notebook = executed
    images = shown(cell_with(notebook, "MAIN_PLOTS = "), "image/png")
    assert len(images) == SIMPLE_CNN_PLOTS


def test_it_says_why_there_is_no_report(executed):
    _, notebook = executed
    assert text(cell_with(notebook, "report.md")).startswith("No report: it needs the ImageNet")
