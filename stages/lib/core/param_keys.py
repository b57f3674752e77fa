"""The keys params.yaml may hold: every field of params.py's sections (known_keys), and the
check that stops at a key no stage reads, naming the closest real one (a typo, or a `+key` of
`dvc exp run -S`, would otherwise change nothing, silently)."""
import difflib
from dataclasses import fields

from .common import StageError
from .names import TRAINED_STRATEGIES
from .params import (
    Augment,
    Distributed,
    Download,
    Shared,
    Strategy,
    Svm,
    Training,
    TransferData,
    Tsne,
)

DOWNLOAD_KEYS = ("format", "url", "sha256", "weights")   # download.<name>.*, by format


def known_keys(names=()):
    """Every dotted key the pipeline reads (the fields of the sections above), with
    download.<name>.* for each source `names` (download's entries are the user's to add).
    transfer.svm.grid holds a mapping of its own: it is one key."""
    def of(cls, prefix, skip=()):
        return [f"{prefix}{f.name}" for f in fields(cls) if f.name not in skip]

    keys = of(Shared, "") + of(Distributed, "distributed.") + of(Download, "download.")
    keys += [f"download.{n}.{k}" for n in names for k in DOWNLOAD_KEYS]
    keys += of(Training, "alexnet.") + of(Training, "simple_cnn.", skip=("augment",))
    keys += of(TransferData, "transfer.") + of(Svm, "transfer.svm.") + of(Tsne, "tsne.")
    for name in TRAINED_STRATEGIES:
        keys += of(Strategy, f"transfer.{name}.", skip=("augment",))
        keys += of(Augment, f"transfer.{name}.augment.")
    return keys + ["report.language"]


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


def check_known(data, path="params.yaml"):
    """Stop with one line at the first key of `data` that no stage reads (a typo, or a `+key`
    added by `dvc exp run -S`, would otherwise change nothing, silently), naming the closest
    key that exists."""
    downloads = data.get("download")
    settings = {f.name for f in fields(Download)}
    names = [n for n in downloads if n not in settings] if isinstance(downloads, dict) else []
    known = known_keys(names)
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
