"""The rule for the names data brings (class names): they reach HTML, scripts and spreadsheets.
The names of models and strategies are params.yaml's (`models`, `strategies`: params.py);
their wording for people is the report's (stages/templates/)."""
import re
import unicodedata

from .common import StageError

UNSAFE_IN_NAMES = re.compile(r"[<>&\"'\\\x00-\x1f\x7f]")   # markup, quotes, escapes, controls
FORMULA_START = ("=", "+", "-", "@")   # a spreadsheet reads a cell that starts so as a formula
MAX_CLASS_NAME = 100   # characters: a legend, a table cell, an axis label


def normalised(name):
    """A class name as it is compared and shown: Unicode NFC (café typed on macOS is NFD: the
    same letters, other code points) without spaces around it."""
    return unicodedata.normalize("NFC", name).strip()


def check_class_name(name, where):
    """Class names travel into the report's HTML and Markdown, `dvc plots` pages (inside a
    <script> block) and CSV files opened in spreadsheets: a name with markup characters,
    quotes, a backslash, a control character or a newline, or one that starts like a formula,
    is refused, naming it and the rule."""
    if UNSAFE_IN_NAMES.search(name) or name.startswith(FORMULA_START) or not name.strip():
        raise StageError(f"{where} has a class named {name!r}: class names must not contain "
                         "< > & quotes, a backslash or control characters, nor start with "
                         "= + - @ (they reach HTML, scripts and spreadsheets)")
    if len(name) > MAX_CLASS_NAME:
        raise StageError(f"{where} has a class name of {len(name)} characters, longer than "
                         f"{MAX_CLASS_NAME} (legends, tables and axes show it): {name[:40]!r}...")
