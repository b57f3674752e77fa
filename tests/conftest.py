"""Fixtures: the tiny offline mirror (built once per session) and a fresh copy of the project.
The functions the tests share are in helpers.py."""
import pytest

import tiny_mirror

# the names below are imported by test modules that predate helpers.py
from helpers import ROOT, copy_project, edit_params, run, stage_env  # noqa: F401


@pytest.fixture(scope="session")
def mirror(tmp_path_factory):
    return tiny_mirror.build(tmp_path_factory.mktemp("mirror"))


@pytest.fixture
def project(tmp_path):
    return copy_project(tmp_path / "project")
