"""stages/lib/core/common.run, the life of a stage process: SIGTERM unwinds it (its temporary
folder removed), a second instance is refused while the first holds the stage lock, and a stage
dies with the process that runs it (DVC, or the shell DVC starts) but not with a grandparent."""
import os
import select
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from helpers import assert_one_line_error, stage_env

SLOW_STAGE = textwrap.dedent("""
    import sys
    from stages.lib.core.common import run
    from stages.lib.core.files import temporary_dir_beside

    def main(argv):
        work = temporary_dir_beside("data/raw/slow")
        try:
            (work / "partial").write_bytes(b"x" * 1000)
            print("ready", flush=True)
            for line in sys.stdin:   # busy until its stdin closes; says each line back
                print(line.strip(), flush=True)
        finally:
            import shutil
            shutil.rmtree(work, ignore_errors=True)

    run(main)
""")


def start_slow_stage(project, *args):
    """The slow stage, started and ready: its folder under data/raw holds a partial file; it
    runs until its stdin (a pipe of the test's) closes, or it is ended."""
    script = project / "stages" / "slow.py"
    script.write_text(SLOW_STAGE)
    process = subprocess.Popen([sys.executable, "-m", "stages.slow", *args], cwd=project,
                               env=stage_env(), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, start_new_session=True)
    assert process.stdout.readline().strip() == "ready", process.stderr.read()
    return process


def echo(process, text):
    """What the slow stage under `process` (its stdin and stdout pass through `process`) says
    back to `text`: `text` while it runs, "" once it has ended (its pipes closed)."""
    try:
        process.stdin.write(text + "\n")
        process.stdin.flush()
    except BrokenPipeError:
        return ""
    return process.stdout.readline().strip()


def parent_of(pid):
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat.rsplit(")", 1)[1].split()[1])


def end_group(process):
    """SIGKILL to whatever is left of the session `process` leads (start_new_session)."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:   # nobody left
        pass
    process.wait(timeout=60)


def has_exited(pidfd, timeout):
    """True as soon as the process of `pidfd` (os.pidfd_open) exits, False if it is still
    running after `timeout` s: a pidfd turns readable when its process ends."""
    poller = select.poll()
    poller.register(pidfd, select.POLLIN)
    return bool(poller.poll(timeout * 1000))


@pytest.mark.e2e
def test_sigterm_removes_the_temporary_folder(project):
    process = start_slow_stage(project, "a")
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=60) == 143
    assert process.stderr.read().strip().splitlines() == ["error: terminated"]
    assert list((project / "data/raw").iterdir()) == []


@pytest.mark.e2e
def test_a_second_instance_of_a_stage_is_refused(project):
    first = start_slow_stage(project, "a")
    try:
        second = subprocess.run([sys.executable, "-m", "stages.slow", "a"], cwd=project,
                                env=stage_env(), stdin=subprocess.DEVNULL, capture_output=True,
                                text=True, timeout=60)   # were it not refused: no input, it ends
        assert_one_line_error(second, rf"another slow@a is running in this workspace "
                                      rf"\(pid {first.pid}\); wait for it")
        other = subprocess.Popen([sys.executable, "-m", "stages.slow", "b"], cwd=project,
                                 env=stage_env(), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                 text=True)
        assert other.stdout.readline().strip() == "ready"   # another stage runs alongside
        other.terminate()
        other.wait(timeout=60)
        other.stdin.close()
        other.stdout.close()
    finally:
        first.terminate()
        first.wait(timeout=60)
        for stream in (first.stdin, first.stdout, first.stderr):
            stream.close()


@pytest.mark.e2e
def test_a_stage_dies_with_the_process_that_runs_it(project):
    """`dvc` killed with SIGKILL: its `sh -c` child lives on; the stage must not."""
    (project / "stages" / "slow.py").write_text(SLOW_STAGE)
    runner = subprocess.Popen(
        [sys.executable, "-c", "import subprocess, sys; subprocess.run(sys.argv[1:])",
         "sh", "-c", f"{sys.executable} -m stages.slow a; echo done"],
        cwd=project, env=stage_env(), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        assert runner.stdout.readline().strip() == "ready", runner.stderr.read()
        lock = project / ".dvc/tmp/stage-locks/slow@a.lock"
        stage = os.pidfd_open(int(lock.read_text()))   # taken before the stage said "ready"
        try:
            runner.kill()   # SIGKILL, as `kill -9 <dvc>`
            runner.wait(timeout=60)
            # the event: the stage exits (a pidfd turns readable then), within a deadline
            assert has_exited(stage, timeout=60), "the stage lived on after its runner died"
        finally:
            os.close(stage)
        # it unwound before it exited: its folder is gone
        assert list((project / "data/raw").iterdir()) == []
        assert runner.stdout.read().strip() == "done"   # then its shell went on and ended
    finally:
        end_group(runner)
        for stream in (runner.stdin, runner.stdout, runner.stderr):
            stream.close()


@pytest.mark.e2e
def test_a_stage_outlives_a_grandparent_that_is_not_behind_a_shell(project):
    """A queue worker may exit while the job it started goes on: only a shell's parent counts.
    The stage's own parent still does: its death then ends the stage."""
    (project / "stages" / "slow.py").write_text(SLOW_STAGE)
    runner = subprocess.Popen(
        [sys.executable, "-c", "import subprocess, sys; subprocess.run(sys.argv[1:])",
         sys.executable, "-c", "import subprocess, sys; subprocess.run(sys.argv[1:])",
         sys.executable, "-m", "stages.slow", "a"],
        cwd=project, env=stage_env(), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        assert runner.stdout.readline().strip() == "ready", runner.stderr.read()
        stage_pid = int((project / ".dvc/tmp/stage-locks/slow@a.lock").read_text())
        parent = parent_of(stage_pid)   # the middle process: not a shell
        assert parent_of(parent) == runner.pid
        stage = os.pidfd_open(stage_pid)
        try:
            runner.kill()   # the grandparent goes; the parent (not a shell) stays
            runner.wait(timeout=60)
            # The event: the grandparent has exited and is reaped, so a watcher of it (a pidfd,
            # a poll of its pid) has been woken. The stage answers after that, twice, waiting
            # on its stdin (the GIL free for any other thread) between the two: had a watcher
            # sent it SIGTERM, its read would have ended in `error: terminated`, no answer.
            for n in range(2):
                assert echo(runner, f"still here {n}") == f"still here {n}", \
                    "the stage was ended"
            assert list((project / "data/raw").iterdir()), "the stage was ended"
            os.kill(parent, signal.SIGKILL)   # the stage's own parent: this one counts
            assert has_exited(stage, timeout=60), "the stage lived on after its parent died"
        finally:
            os.close(stage)
        assert list((project / "data/raw").iterdir()) == []   # it unwound and cleaned up
    finally:
        end_group(runner)
        for stream in (runner.stdin, runner.stdout, runner.stderr):
            stream.close()
