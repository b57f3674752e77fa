"""The check that params.yaml holds only keys some stage reads: a key that is not among the
known ones (params.known_keys) stops with one line naming the closest real key (a typo, or a
`+key` of `dvc exp run -S`, would otherwise change nothing, silently). Generic: the known keys
are given; params.py, which knows the sections, calls it."""
import difflib

from .common import StageError


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
