"""params.yaml as a file, whatever its sections mean: read bounded and strictly (its size,
UTF-8, YAML aliases, a key given twice: one line for each), and checked to hold only keys some
stage reads: a key that is not among the known ones (params.known_keys) stops with one line
naming the closest real key (a typo, or a `+key` of `dvc exp run -S`, would otherwise change
nothing, silently); and one value (`param`) or a dataclass section of them (`spec` beside each
field, `read_section`) read and checked, one line naming the key and what it allows. Generic: the
known keys and the sections are given; params.py, which knows them, calls it."""
import difflib
import math
from dataclasses import field, fields, is_dataclass
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


# ---------------------------------------------------------------- one value, one section

_KIND_NAMES = {int: "an integer", float: "a number", bool: "true or false", str: "a string",
               list: "a list", dict: "a mapping", object: "a value"}


def param(params, key, kind, *, choices=None, minimum=None, above=None, maximum=None,
          unset=None):
    """The value at dotted `key` in `params`, checked; a StageError names the key and what is
    allowed. `unset` is the word (e.g. "same", "none") that params.yaml writes for "no value":
    it, or a null, gives None. params.yaml avoids bare nulls because `dvc exp run -S` rewrites
    every null in the file as an empty value."""
    node = params
    for i, part in enumerate(key.split(".")):
        if not isinstance(node, dict) or part not in node:
            raise StageError(f"params.yaml: missing key '{key}'"
                             + (f" (no '{part}' under '{'.'.join(key.split('.')[:i])}')"
                                if i else ""))
        node = node[part]
    value = shown = node
    if unset is not None and (value is None or value == unset):
        return None
    ok = isinstance(value, kind) and not (kind in (int, float) and isinstance(value, bool))
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value, ok = float(value), True
    if not ok:
        raise StageError(f"params.yaml: '{key}' must be {_KIND_NAMES[kind]}"
                         f"{f' or {unset}' if unset else ''}, got {value!r}")
    if kind is float and not math.isfinite(value):
        raise StageError(f"params.yaml: '{key}' must be a finite number, got {shown!r}")
    if choices is not None and value not in choices:
        raise StageError(f"params.yaml: '{key}' must be one of {', '.join(map(str, choices))}; "
                         f"got {shown!r}")
    if minimum is not None and value < minimum:
        raise StageError(f"params.yaml: '{key}' must be >= {minimum}, got {shown!r}")
    if above is not None and value <= above:
        raise StageError(f"params.yaml: '{key}' must be > {above}, got {shown!r}")
    if maximum is not None and value > maximum:
        raise StageError(f"params.yaml: '{key}' must be <= {maximum}, got {shown!r}")
    return value


_REQUIRED = object()   # spec(absent=...): the key must be in params.yaml


def spec(*, choices=None, minimum=None, above=None, maximum=None, unset=None, check=None,
         absent=_REQUIRED):
    """A field's bounds, for `read_section`: `choices`, `minimum` (>=), `above` (>), `maximum`
    (<=) and `unset`, the word params.yaml writes for "no value" (see `param`). `check(key, value)`
    replaces them for a value of a shape of its own and returns it, or raises its one line.
    `absent`: the value when params.yaml lacks the key (by default the key is required)."""
    return field(metadata={"choices": choices, "minimum": minimum, "above": above,
                           "maximum": maximum, "unset": unset, "check": check,
                           "absent": absent})


def _kind(annotation):
    """The type `param` checks for a field annotated `annotation` (`int | None` -> int: the
    None is `unset`'s); a union of two kinds, or anything else, is checked by `check`."""
    kinds = [k for k in getattr(annotation, "__args__", (annotation,)) if k is not type(None)]
    return kinds[0] if len(kinds) == 1 and kinds[0] in _KIND_NAMES else object


def read_section(cls, params, prefix, skip=()):
    """The section `cls` (a dataclass of `spec` fields) from the keys `<prefix><field>` of
    `params`, each read by read_field; a dataclass field is a subsection (`<prefix><field>.`).
    The fields in `skip` are None: the stage does not read (or declare) them."""
    values = {}
    for f in fields(cls):
        key = f"{prefix}{f.name}"
        if f.name in skip:
            values[f.name] = None
        elif is_dataclass(f.type):
            values[f.name] = read_section(f.type, params, f"{key}.")
        else:
            values[f.name] = read_field(cls, f.name, params, key)
    return cls(**values)


def read_field(cls, name, params, key):
    """The value at `key` checked as field `name` of `cls` (a dataclass of `spec` fields) says:
    by `param` with its bounds, or by its own `check`; its `absent` value when the key is not
    there and may be left out."""
    f = next(f for f in fields(cls) if f.name == name)
    if f.metadata["absent"] is not _REQUIRED and not _present(params, key):
        return f.metadata["absent"]
    if f.metadata["check"] is not None:
        return f.metadata["check"](key, param(params, key, object))
    bounds = {b: f.metadata[b] for b in ("choices", "minimum", "above", "maximum", "unset")}
    return param(params, key, _kind(f.type), **bounds)


def _present(params, key):
    node = params
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True
