"""The report's words: the sentences of one language (stages/templates/wording/<language>.yaml)
and its way of writing numbers. Shared by the report stage and the figures it draws
(stages/lib/figures.py)."""

import yaml

from .core.common import StageError
from .core.param_keys import param
from .core.params import WORDING, languages  # noqa: F401 (languages: the report's)

TEMPLATES = WORDING.parent


def author_of(settings):
    """report.author: the student's name as the hand-in gives it ("Surname(s), Name"), or
    None (`none` or empty); the report prints it, `make submission` names its files after it."""
    author = param(settings, "report.author", str, unset="none")
    if author is not None and (not author.strip() or len(author) > 200
                               or any(not c.isprintable() for c in author)):
        raise StageError("params.yaml: 'report.author' must be a name on one line (at most 200 "
                         f"characters), or none, got {author!r}")
    return author.strip() if author else None


class Language:
    """The sentences of one language and its numbers. `standin`: the strategies whose numbers
    come from stand-in weights (not ImageNet's): their names say so wherever they appear."""

    def __init__(self, language, standin=()):
        self.words = yaml.safe_load((TEMPLATES / "wording" / f"{language}.yaml").read_text())
        self.decimal, self.thousands = self.words["decimal_mark"], self.words["thousands_mark"]
        self.standin = set(standin)

    def say(self, key, **fields):
        """The sentence at dotted `key` with its {fields} filled in. A plural ({one, other})
        is picked by the count `n`: `one` for exactly 1, in English as in Spanish."""
        sentence = self.words
        for part in key.split("."):
            sentence = sentence[part]
        if isinstance(sentence, dict):
            sentence = sentence["one" if fields["n"] == 1 else "other"]
            fields["n"] = self.integer(fields["n"])
        return sentence.format(**fields)

    def strategy(self, name):
        """A strategy's name in this language; one the wording does not list (added to
        params.yaml's `strategies` without wording) is shown as params.yaml names it."""
        shown = self.say(f"strategies.{name}") if name in self.words["strategies"] else name
        return self.say("standin_name", name=shown) if name in self.standin else shown

    def model(self, name):
        """A model's name in this language, or as params.yaml's `models` names it."""
        return self.say(f"models.{name}") if name in self.words["models"] else name

    def download(self, name):
        """A dataset's (or the weights') name as people write it (wording `downloads`); one the
        wording does not list keeps params.yaml's name."""
        return self.words["downloads"].get(name, name)

    def class_name(self, dataset, name):
        """A class of `dataset` in this language (wording `class_names`); a class the wording
        does not list (a dataset of your own) keeps its folder's name."""
        return self.words["class_names"].get(dataset, {}).get(name, name)

    def pct(self, x, digits=2):
        return self.say("na") if x is None else self.marks(f"{100 * x:.{digits}f} %")

    def num(self, x, digits=3):
        return self.say("na") if x is None else self.marks(f"{x:.{digits}f}")

    def marks(self, written):
        """A number as Python writes it with the language's decimal mark and a true minus
        sign (−0.257, not the hyphen of -0.257)."""
        return written.replace(".", self.decimal).replace("-", "\u2212")

    def integer(self, n):
        return f"{n:,}".replace(",", self.thousands)

    def plain(self, x):
        """A hyperparameter as written (a learning rate of 0.0005, not 5.000e-04)."""
        return f"{x:g}".replace(".", self.decimal) if isinstance(x, float) else str(x)
