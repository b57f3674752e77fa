"""Figures to PNG files with matplotlib, without a display (the Agg backend), the same bytes for
the same figure (no software-version stamp in the file), each file written whole (files.py's
atomic write: a kill or a full disk leaves the previous file, or none).

Class names come from the data, in any script. Matplotlib draws a character no font of its
family has as an empty box: where a font for other scripts is installed (FALLBACK, e.g. Debian's
fonts-noto-cjk), it joins the family; a character that no installed font has is written in
figures as its code point (<U+540D>), readable and searchable, and said once (names())."""
import functools
import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 (the figures' modules draw through it)
from matplotlib import font_manager  # noqa: E402
from matplotlib.ft2font import FT2Font  # noqa: E402

from .core.files import write_atomic  # noqa: E402

FALLBACK = ("Noto Sans CJK JP", "Noto Sans CJK SC", "Noto Sans CJK TC", "Noto Sans CJK KR",
            "Source Han Sans", "WenQuanYi Zen Hei", "WenQuanYi Micro Hei", "IPAGothic",
            "Droid Sans Fallback", "Noto Sans Arabic", "Noto Sans Hebrew",
            "Noto Sans Devanagari", "Noto Sans Thai")
_INSTALLED = {entry.name: entry.fname for entry in font_manager.fontManager.ttflist}
if any(name in _INSTALLED for name in FALLBACK):   # else the family stays matplotlib's own
    plt.rcParams["font.family"] = ["DejaVu Sans", *(n for n in FALLBACK if n in _INSTALLED)]


@functools.cache
def _drawable():
    """The code points the fonts of the figures' family can draw."""
    family = plt.rcParams["font.family"]
    fonts = [_INSTALLED[name] for name in family if name in _INSTALLED] or \
        [font_manager.findfont(font_manager.FontProperties(family=family))]
    return frozenset(code for path in fonts for code in FT2Font(path).get_charmap())


_SAID = set()   # the names already said in this process (each figure asks again)


def names(classes):
    """The class names as figures write them: each character no installed font can draw as its
    code point. Prints one line naming the classes that changed (none: nothing printed)."""
    drawable = _drawable()
    shown = ["".join(c if ord(c) in drawable or c.isspace() else f"<U+{ord(c):04X}>"
                     for c in name) for name in classes]
    changed = [name for name, label in zip(classes, shown) if name != label and name not in _SAID]
    _SAID.update(changed)
    if changed:
        print(f"figures: no installed font draws the class names {', '.join(changed[:5])}"
              f"{' ...' if len(changed) > 5 else ''}: written as code points (<U+...>); a font "
              "with their script (e.g. fonts-noto-cjk) draws them", flush=True)
    return shown


def save(fig, path):
    buffer = io.BytesIO()
    try:
        fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight",
                    metadata={"Software": None})
    finally:
        plt.close(fig)
    write_atomic(path, buffer.getbuffer())
