"""README.md's results table is what tools/results_table.py makes of the committed metrics."""
import subprocess
import sys

from helpers import ROOT


def check(readme):
    return subprocess.run([sys.executable, "-m", "tools.results_table", "--check", "--readme",
                           str(readme)], cwd=ROOT, capture_output=True, text=True)


def test_the_readme_table_says_what_the_committed_metrics_say():
    result = check(ROOT / "README.md")
    assert result.returncode == 0, result.stderr


def test_a_stale_table_is_found(tmp_path):
    readme = (ROOT / "README.md").read_text()
    stale = tmp_path / "README.md"
    stale.write_text(readme.replace("<!-- results:end -->", "| 9 | x |\n<!-- results:end -->"))
    result = check(stale)
    assert result.returncode == 1 and "results table is out of date" in result.stderr
