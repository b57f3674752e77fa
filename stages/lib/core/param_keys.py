"""params.yaml as a file, whatever its sections mean: read bounded and strictly (its size,
UTF-8, YAML aliases, a key given twice: one line for each), and checked to hold only keys some
stage reads: a key that is not among the known ones (params.known_keys) stops with one line
naming the closest real key (a typo, or a `+key` of `dvc exp run -S`, would otherwise change
nothing, silently). Generic: the known keys are given; params.py, which knows the sections,
calls it."""
import difflib
from pathlib import Path

import yaml

from .common import StageError, one_line

MAX_PARAMS_BYTES = 1 << 20   # a settings file: 1 MiB is 100 times this project's
MAX_ALIASES = 100   # YAML *aliases: each may repeat a whole subtree (an "alias bomb")


class _UniqueKeyLoader(yaml.SafeLoader):
    """yaml.SafeLoader that refuses a key given twice in one mapping (PyYAML keeps the last one
    silently; DVC refuses the file, so the stages must not read it differently) and more than
    MAX_ALIASES aliases (each can stand for a whole subtree: a few nested ones make a file of
    a few hundred bytes that DVC, expanding it, takes minutes over or crashes on)."""

    aliases = 0

    def compose_node(self, parent, index):
        if self.check_event(yaml.events.AliasEvent):
            self.aliases += 1
            if self.aliases > MAX_ALIASES:
                mark = self.peek_event().start_mark
                raise StageError(f"{Path(mark.name).name or 'params.yaml'}:{mark.line + 1}:"
                                 f"{mark.column + 1}: more than {MAX_ALIASES} YAML aliases "
                                 "(*name): write the values out")
        return super().compose_node(parent, index)

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                mark = key_node.start_mark
                raise StageError(f"{Path(mark.name).name or 'params.yaml'}:{mark.line + 1}:"
                                 f"{mark.column + 1}: duplicate key {key!r}")
            seen.add(key)
        return super().construct_mapping(node, deep=deep)



def read(path="params.yaml"):
    """The YAML mapping at `path`, bounded before it is parsed (at most MAX_PARAMS_BYTES of
    UTF-8 text, MAX_ALIASES aliases) and strict (no key twice); a syntax error names its line
    and column."""
    try:
        raw = Path(path).read_bytes()
    except FileNotFoundError:
        raise StageError(f"{path} not found (run from the project root)") from None
    if len(raw) > MAX_PARAMS_BYTES:
        raise StageError(f"{path} is {len(raw):,} bytes, more than the {MAX_PARAMS_BYTES:,} "
                         "a settings file may have: it holds settings, not data")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        line = raw[:error.start].count(b"\n") + 1
        raise StageError(f"{path}:{line}: not UTF-8 text (byte 0x{raw[error.start]:02x}): save "
                         "it as UTF-8") from None
    try:
        loader = _UniqueKeyLoader(text)
        loader.name = str(path)
        try:
            data = loader.get_single_data()
        finally:
            loader.dispose()
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None) or getattr(error, "context_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        problem = getattr(error, "problem", None) or one_line(error)
        raise StageError(f"{where}: not valid YAML: {problem}") from None
    if not isinstance(data, dict):
        raise StageError(f"{path} must be a mapping of keys to values")
    return data


def closest(key, known):
    """The known key `key` was probably meant to be: a sibling with a similar name
    ('alexnet.lrr' -> 'alexnet.lr'); under a section that does not exist, the same name in a
    section with a similar name ('alexnt.lr' -> 'alexnet.lr'); else None."""
    section, _, name = key.rpartition(".")
    siblings = {k.rpartition(".")[2]: k for k in known if k.rpartition(".")[0] == section}
    if siblings:
        close = difflib.get_close_matches(name, siblings, n=1, cutoff=0.7)
        return siblings[close[0]] if close else None
    alike = [k for k in known if k.rpartition(".")[2] == name]
    close = difflib.get_close_matches(key, alike, n=1, cutoff=0.7)
    return close[0] if close else None


def check(data, known, path="params.yaml"):
    """Stop at the first key of the mapping `data` (nested sections as dotted keys) that is not
    in `known`, naming the closest known key."""
    sections = {k.rsplit(".", i)[0] for k in known for i in range(1, k.count(".") + 1)}

    def walk(node, prefix):
        for key, value in node.items():
            dotted = f"{prefix}{key}"
            if dotted in known:
                continue
            if dotted in sections:
                if isinstance(value, dict):
                    walk(value, f"{dotted}.")
                continue   # a section that is not a mapping: its reader names what it wants
            while isinstance(value, dict) and value:   # a whole unknown section: its first key
                key, value = next(iter(value.items()))
                dotted = f"{dotted}.{key}"
            close = closest(dotted, known)
            raise StageError(f"{path}: '{dotted}' is not a parameter of this pipeline"
                             + (f"; did you mean '{close}'?" if close else ""))

    walk(data, "")
