"""A fresh Colab runtime or container has no git identity, and DVC's experiments are commits:
tools/smoke.py gives them one through git's own variables when git knows nobody, and leaves
an identity the user configured alone."""
import os
import subprocess
import sys

import pytest

from tools import smoke


def nobody(home):
    """An environment in which git knows no identity: an empty HOME, no system config, no
    GIT_AUTHOR_* / GIT_COMMITTER_* variables."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("GIT_AUTHOR_", "GIT_COMMITTER_", "EMAIL"))}
    env.update(HOME=str(home), GIT_CONFIG_NOSYSTEM="1", XDG_CONFIG_HOME=str(home / ".config"),
               DVC_NO_ANALYTICS="1")
    return env


def git(repo, *args, env):
    return subprocess.run(["git", *args], cwd=repo, env=env, capture_output=True, text=True,
                          check=True).stdout.strip()


def test_the_fallback_fills_only_what_git_does_not_know(tmp_path):
    env = nobody(tmp_path)
    git(tmp_path, "init", "-q", env=env)
    filled = smoke.with_git_identity(env, cwd=tmp_path)
    assert {k: filled[k] for k in smoke.FALLBACK_IDENTITY} == smoke.FALLBACK_IDENTITY
    git(tmp_path, "config", "user.name", "Ana", env=env)   # the user's own, in the repo
    filled = smoke.with_git_identity(env, cwd=tmp_path)
    assert "GIT_AUTHOR_NAME" not in filled and "GIT_COMMITTER_NAME" not in filled
    assert filled["GIT_AUTHOR_EMAIL"] == "dvc@localhost"   # what is still missing
    said = smoke.with_git_identity(dict(env, GIT_AUTHOR_EMAIL="ana@example.org"), cwd=tmp_path)
    assert said["GIT_AUTHOR_EMAIL"] == "ana@example.org"


@pytest.mark.e2e
def test_the_identity_reaches_dvc_s_experiment_commit(tmp_path):
    """`dvc exp run` in a repo whose git knows nobody commits with the fallback identity."""
    home, repo = tmp_path / "home", tmp_path / "repo"
    home.mkdir()
    repo.mkdir()
    env = nobody(home)
    (repo / "params.yaml").write_text("x: 1\n")
    (repo / "dvc.yaml").write_text(
        "stages:\n  write:\n    cmd: python -c \"open('out.txt', 'w').write('done')\"\n"
        "    params: [x]\n    outs: [out.txt]\n")
    git(repo, "init", "-q", env=env)
    subprocess.run([sys.executable, "-m", "dvc", "init", "-q"], cwd=repo, env=env, check=True)
    git(repo, "add", "-A", env=env)
    git(repo, "-c", "user.name=Teacher", "-c", "user.email=t@example.org", "commit", "-q",
        "-m", "start", env=env)
    env["PATH"] = f"{os.path.dirname(sys.executable)}{os.pathsep}{env['PATH']}"
    result = subprocess.run([sys.executable, "-m", "dvc", "exp", "run", "-n", "first", "-S",
                             "x=2"], cwd=repo, env=smoke.with_git_identity(env, repo),
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    refs = git(repo, "for-each-ref", "--format=%(refname)", "refs/exps", env=env).split()
    [ref] = [r for r in refs if r.endswith("/first")]
    assert git(repo, "log", "-1", "--format=%an <%ae>", ref, env=env) == \
        "DVC experiment <dvc@localhost>"
