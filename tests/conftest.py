"""Fixtures: the tiny offline mirror (built once per session) and a fresh copy of the project.
The functions the tests share are in helpers.py.

Tiers: `pytest -m "not e2e"` (make test-fast) runs the unit tests; `e2e` marks the tests that
run stages or DVC on data (whole modules mark themselves; in the other modules, every test
that uses a fixture with data is marked here).

Threads: under pytest-xdist each worker, and every stage, DVC or torchrun process it starts,
runs torch with the worker's share of the cores (OMP_NUM_THREADS, unless already set). Two
workers each starting torch's default, one thread per core, put twice as many threads as cores
to spin-wait against each other (docs/design.md, tests/ in Layout)."""
import os

# before anything imports torch: it reads OMP_NUM_THREADS once, at import
if os.environ.get("PYTEST_XDIST_WORKER_COUNT"):
    os.environ.setdefault("OMP_NUM_THREADS", str(max(
        1, (os.cpu_count() or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"]))))

import pytest  # noqa: E402

import tiny_mirror
from helpers import copy_project


@pytest.fixture(scope="session")
def mirror(tmp_path_factory):
    return tiny_mirror.build(tmp_path_factory.mktemp("mirror"))


@pytest.fixture
def project(tmp_path):
    return copy_project(tmp_path / "project")


DATA_FIXTURES = {"mirror", "pipeline", "raw_data", "with_data", "cifar", "reference"}


def pytest_collection_modifyitems(items):
    for item in items:
        if DATA_FIXTURES & set(item.fixturenames):
            item.add_marker(pytest.mark.e2e)
