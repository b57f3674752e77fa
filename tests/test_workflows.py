"""The pull-request workflow (.github/workflows/pull-request.yml): valid for GitHub (its schema)
and clean for zizmor's security audits; it runs CI's own checks and posts what
tools/pr_report.py builds. The report itself, built on two local commits of a clone: the params
and metrics that changed with both values, the pictures that changed side by side (and only
those), and one line for a base that is not a commit."""
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from readme_commands import clone_project

from helpers import ROOT

WORKFLOW = ROOT / ".github" / "workflows" / "pull-request.yml"
BIN = Path(sys.executable).parent


def tool(name):
    found = shutil.which(name) or str(BIN / name)
    if not Path(found).exists():
        pytest.skip(f"no {name} (requirements-test.txt installs it)")
    return found


def test_the_workflow_is_valid_for_github():
    result = subprocess.run([tool("check-jsonschema"), "--builtin-schema",
                             "vendor.github-workflows", str(WORKFLOW)], capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_zizmor_finds_nothing():
    result = subprocess.run([tool("zizmor"), "--offline", str(WORKFLOW)], capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_workflow_runs_ci_and_posts_the_report():
    flow = yaml.safe_load(WORKFLOW.read_text())
    assert set(flow[True]) == {"pull_request"}            # never pull_request_target
    assert flow["permissions"] == {}
    checks, results = flow["jobs"]["checks"], flow["jobs"]["results"]
    assert {"run": ".ci/run"} in checks["steps"]
    runs = [s.get("run", "") for s in results["steps"]]
    assert any("python -m tools.pr_report --base" in r for r in runs)
    assert any("cml" in r and "comment create" in r and "pr_report/report.md" in r for r in runs)
    assert results["permissions"] == {"contents": "read", "pull-requests": "write"}


def git(project, *args):
    subprocess.run(["git", *args], cwd=project, check=True, capture_output=True)


@pytest.mark.e2e
def test_the_report_shows_what_changed_between_two_commits(tmp_path):
    project = clone_project(tmp_path / "project", None)
    python = str(project / ".venv" / "bin" / "python")
    git(project, "tag", "base")
    metrics = project / "metrics" / "simple_cnn.json"
    metrics.write_text(metrics.read_text().replace('"accuracy": 0.9878', '"accuracy": 0.9901'))
    params = project / "params.yaml"
    params.write_text(params.read_text().replace("\n  lr: 0.001\n", "\n  lr: 0.002\n", 1))
    shutil.copyfile(project / "plots/alexnet/curves.png", project / "plots/simple_cnn/curves.png")
    git(project, "commit", "-qam", "a pull request")
    result = subprocess.run([python, "-m", "tools.pr_report", "--base", "base", "--out", "out"],
                            cwd=project, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    report = (project / "out" / "report.md").read_text()
    assert report.startswith("## Results against `base`")
    cells = [[cell.strip() for cell in line.strip("|").split("|")]
             for line in report.splitlines() if line.startswith("|")]
    assert ["Path", "Param", "base", "this branch"] in cells
    assert ["params.yaml", "simple_cnn.lr", "0.001", "0.002"] in cells
    row = next(line for line in report.splitlines() if "metrics/simple_cnn.json" in line
               and "| accuracy " in line)
    assert "0.9878" in row and "0.9901" in row
    pictures = [line for line in report.splitlines() if line.startswith("| `plots/")]
    assert len(pictures) == 1 and pictures[0].startswith("| `plots/simple_cnn/curves.png` |")
    for link in pictures[0].split("](")[1:]:
        assert (project / "out" / link.split(")")[0]).is_file()
    assert (project / "out" / "plots" / "index.html").is_file()

    again = subprocess.run([python, "-m", "tools.pr_report", "--base", "nosuchrev"], cwd=project,
                           capture_output=True, text=True, timeout=60)
    assert again.returncode == 1 and again.stderr.strip() == \
        "pr_report: error: nosuchrev is not a commit here (fetch it: git fetch origin)"
