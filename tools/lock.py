"""Write the lock files from the packages installed in this environment:

    python -m tools.lock    # requirements.lock, requirements-test.lock

requirements.txt and requirements-test.txt keep the ranges the code supports; the lock files
pin every package those ranges pulled in (their dependencies too, as installed here), so that
`make` installs the exact environment the results and tests were produced with. Run it in a
venv made from the ranges (make repro / make test), after checking that the tests pass."""
import sys
from importlib import metadata
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
HEADER = ("# Exact versions for Linux x86_64, Python {python}: written by tools/lock.py\n"
          "# from a venv installed from {source};\n# `make` installs this file on such machines.\n")


def requirements(path):
    lines = (line.split("#", 1)[0].strip() for line in path.read_text().splitlines())
    return [Requirement(line) for line in lines if line and not line.startswith("-")]


def closure(roots):
    """The installed distributions that `roots` need, transitively: a requirement's marker is
    evaluated here, with the extras its parent was asked for (moto[server] brings flask)."""
    env = default_environment()
    found, todo = {}, [(r, frozenset()) for r in roots]
    while todo:
        requirement, parent_extras = todo.pop()
        if requirement.marker and not any(requirement.marker.evaluate({**env, "extra": e})
                                          for e in (parent_extras or {""})):
            continue
        extras = frozenset(requirement.extras)
        key = (canonicalize_name(requirement.name), extras)
        if key in found:
            continue
        try:
            dist = metadata.distribution(requirement.name)
        except metadata.PackageNotFoundError:
            sys.exit(f"{requirement.name} is not installed: install the requirements first")
        found[key] = dist
        todo += [(Requirement(line), extras) for line in dist.requires or []]
    return {canonicalize_name(d.metadata["Name"]): d.version for d in found.values()}


def write(path, pins, source):
    python = ".".join(map(str, sys.version_info[:2]))
    lines = [f"{name}=={version}" for name, version in sorted(pins.items())]
    path.write_text(HEADER.format(python=python, source=source) + "\n".join(lines) + "\n")
    print(f"{path.name}: {len(lines)} packages")


def main():
    runtime = closure(requirements(ROOT / "requirements.txt"))
    write(ROOT / "requirements.lock", runtime, "requirements.txt")
    test = closure(requirements(ROOT / "requirements-test.txt"))
    write(ROOT / "requirements-test.lock", {k: v for k, v in test.items() if k not in runtime},
          "requirements-test.txt (beside requirements.lock)")


if __name__ == "__main__":
    main()
