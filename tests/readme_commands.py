"""The commands the README (and the docs) give, as tests/test_readme.py runs them: taken from
their fenced shell blocks, run one after the other in a `git clone` of the project.

Blocks:
- ```bash (or sh, shell): every line is a command (`# ...` comments dropped, lines ending in
  `\\` or inside an open quote joined);
- ```console: `$ command` lines, each followed by the lines it prints (`…` stands for any
  text). A shown `error:` or `ERROR:` line means the command must fail with it;
- a word after the language (```console offline) runs the block only in that pass.
"""
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from markdown_it import MarkdownIt

from helpers import ROOT

SHELLS = {"bash", "sh", "shell"}
PASSES = ("offline", "weights")
ERROR = re.compile(r"^(error|ERROR):")


@dataclass(frozen=True)
class Command:
    text: str
    source: str                 # README.md:12
    shows: tuple = ()           # the lines a console block shows after it
    only: str | None = None     # the pass it runs in (None: both)

    @property
    def fails(self):
        """A console block that shows an error line: the command must fail with it."""
        return any(ERROR.match(line) for line in self.shows)


def _strip_comment(line):
    return re.sub(r"(^|\s+)#\s.*$", "", line).rstrip()


def _join_continued(lines):
    """Lines ending in a backslash, or inside an open quote, joined with the next."""
    joined, pending = [], ""
    for line in lines:
        pending = f"{pending}\n{line}" if pending else line
        if pending.endswith("\\"):
            pending = pending[:-1].rstrip()
            continue
        try:
            shlex.split(pending)
        except ValueError:   # an open quote
            continue
        joined.append(pending)
        pending = ""
    if pending:
        joined.append(pending)
    return joined


def commands(path, root=ROOT):
    """Every command of the shell and console blocks of the Markdown file `path`."""
    path = Path(path)
    name = path.relative_to(root).as_posix() if path.is_relative_to(root) else path.name
    found = []
    for token in MarkdownIt().parse(path.read_text()):
        if token.type != "fence" or not token.info.strip():
            continue
        language, *words = token.info.split()
        only = words[0] if words else None
        first = token.map[0] + 2   # the block's first line, counted from 1
        lines = token.content.splitlines()
        if language in SHELLS:
            kept = [(_strip_comment(line)) for line in lines]
            for text in _join_continued([line for line in kept if line.strip()]):
                number = first + next(i for i, line in enumerate(lines)
                                      if line.startswith(text.split("\n")[0]))
                found.append(Command(text, f"{name}:{number}", only=only))
        elif language == "console":
            for i, line in enumerate(lines):
                if line.startswith("$ "):
                    shows = []
                    for after in lines[i + 1:]:
                        if after.startswith("$ "):
                            break
                        shows.append(after)
                    found.append(Command(line[2:].strip(), f"{name}:{first + i}", tuple(shows),
                                         only))
    return found


def pattern(shown):
    """A shown line as a regular expression: `…` stands for any text."""
    return re.compile(".*".join(re.escape(part) for part in shown.split("…")))


def quoted_anywhere(line, documents):
    """Whether an output line is shown, as it is, in one of the console blocks of
    `documents`."""
    return any(pattern(shown).fullmatch(line) for document in documents
               for command in commands(document) for shown in command.shows)


def unchecked(documents, checked, skipped):
    """(commands that are neither checked nor listed as skipped, entries of those tables that
    no document has any longer)."""
    texts = {command.text for document in documents for command in commands(document)}
    return sorted(texts - set(checked) - set(skipped)), \
        sorted((set(checked) | set(skipped)) - texts)


# -- the clone the commands run in -------------------------------------------------------------

def clone_project(dest, env):
    """A `git clone` of the project with the working tree's changes (tracked, and untracked
    files git does not ignore) committed on top, on branch main, and a .venv that is this
    interpreter's environment (the Makefile's `make` finds it installed: no network)."""
    dest = Path(dest)
    git = ["git", "-c", "advice.detachedHead=false"]
    subprocess.run([*git, "clone", "-q", str(ROOT), str(dest)], check=True, env=env)
    subprocess.run([*git, "checkout", "-q", "-B", "main"], cwd=dest, check=True, env=env)
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others",
                             "--exclude-standard"], cwd=ROOT, capture_output=True, check=True
                            ).stdout.decode().split("\0")
    for name in filter(None, listed):
        source, target = ROOT / name, dest / name
        if source.is_file():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
        elif target.exists():
            target.unlink()
    subprocess.run(["git", "add", "-A"], cwd=dest, check=True, env=env)
    if subprocess.run(["git", "diff", "--cached", "--quiet"], cwd=dest, env=env).returncode:
        subprocess.run(["git", "commit", "-q", "-m", "The working tree under test"], cwd=dest,
                       check=True, env=env)
    venv_like_this_one(dest / ".venv")
    return dest


def venv_like_this_one(venv):
    """`venv` as a view of this interpreter's virtual environment, with the Makefile's
    installed markers newer than the clone's requirement files."""
    prefix = Path(sys.prefix)
    (venv / "bin").mkdir(parents=True)
    shutil.copy2(prefix / "pyvenv.cfg", venv / "pyvenv.cfg")
    os.symlink(prefix / "lib", venv / "lib")
    for entry in (prefix / "bin").iterdir():
        if not entry.name.startswith("."):
            os.symlink(entry, venv / "bin" / entry.name)
    for marker in (".installed", ".installed-test"):
        (venv / "bin" / marker).touch()


@dataclass
class Step:
    command: Command
    status: int
    output: str
    seconds: float
    before: dict = field(default_factory=dict)   # workspace() before and after, where taken
    after: dict = field(default_factory=dict)
    files: dict = field(default_factory=dict)    # what `make smoke` left in smoke/


def shell(command, project, env, timeout=900):
    """The command as a user types it (bash), its stdout and stderr as one text."""
    done = subprocess.run(["bash", "-c", command], cwd=project, env=env, text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=timeout)
    return done.returncode, done.stdout


def workspace(project, env):
    """What a read-only command must leave as it is: git's view of the files, the params
    and DVC's experiments."""
    def out(*args):
        return subprocess.run(args, cwd=project, env=env, capture_output=True,
                              text=True).stdout
    return {"git status": out("git", "status", "--porcelain"),
            "params.yaml": (Path(project) / "params.yaml").read_text(),
            # what `dvc exp list --all-commits` lists, without a DVC start
            "experiments": out("git", "for-each-ref", "refs/exps")}


def dvc_status(project, env):
    return subprocess.run([sys.executable, "-m", "dvc", "status", "--json"], cwd=project,
                          env=env, capture_output=True, text=True).stdout


def differ_from_head(project, env):
    """The files of the last commit whose bytes in the workspace differ (or are missing), by
    content: git's own status trusts sizes and times, which a DVC checkout can leave as they
    were under other bytes."""
    def git(*args, stdin=None):
        return subprocess.run(["git", *args], cwd=project, env=env, capture_output=True,
                              text=True, input=stdin, check=True).stdout
    committed = {}   # path -> blob id
    for line in git("ls-tree", "-r", "HEAD").splitlines():
        meta, name = line.split("\t", 1)
        committed[name] = meta.split()[2]
    present = [name for name in committed if (Path(project) / name).is_file()]
    hashes = git("hash-object", "--stdin-paths", stdin="\n".join(present)).split()
    return sorted(set(committed) - set(present)) + \
        [name for name, blob in zip(present, hashes) if committed[name] != blob]
