"""The report as text: data strings made literal in Markdown, Markdown to HTML with raw HTML
off, figures embedded in the page, and the Jinja2 environment with a language's filters."""
import base64
import itertools
import re

import jinja2
import markdown

from . import judgements
from .wording import TEMPLATES

_MARKDOWN_SPECIAL = re.compile(r"([\\`*_\[\]<>&|])")


def text(value):
    """A string from data (class folder names, dataset names, the CPU model) as literal text in
    Markdown: the characters that make HTML tags, entities, links, emphasis, code or table
    cells become numeric entities, so a class named `<img src=x onerror=...>` or
    `[x](javascript:...)` is shown as written, never run."""
    return _MARKDOWN_SPECIAL.sub(lambda m: f"&#{ord(m.group(1))};", str(value))


def to_html(markdown_text):
    """Markdown to HTML with raw HTML switched off (it comes out escaped, as text): a second
    guard behind text(), should a data string ever reach the Markdown unescaped."""
    converter = markdown.Markdown(extensions=["tables", "fenced_code"])
    converter.preprocessors.deregister("html_block")
    converter.inlinePatterns.deregister("html")
    return converter.convert(markdown_text)


_FIGURE_SRC = re.compile(r'src="figures/([A-Za-z0-9_.-]+\.png)"')


def embedded(html, folder):
    """`html` with each of its figures (src="figures/<name>.png", files this stage drew into
    `folder`) embedded as a data: URI: one file that opens, mails and prints whole."""
    def inline(match):
        data = base64.b64encode((folder / match.group(1)).read_bytes()).decode()
        return f'src="data:image/png;base64,{data}"'
    return _FIGURE_SRC.sub(inline, html)


def templates(language):
    """The Jinja2 environment: Markdown without autoescaping (data goes through |text), HTML
    with it; StrictUndefined, so a missing value stops the stage instead of vanishing."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES), undefined=jinja2.StrictUndefined,
        autoescape=jinja2.select_autoescape(enabled_extensions=("html.j2",), default=False),
        trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)
    env.filters.update(text=text, pct=language.pct, num=language.num, integer=language.integer,
                       plain=language.plain, strategy=language.strategy, model=language.model)
    env.filters["class_name"] = lambda name, dataset: language.class_name(dataset, name)
    env.filters["download"] = language.download
    env.globals.update(t=language.say, diagnosis=judgements.diagnosis,
                       separable=judgements.separable,
                       next_figure=itertools.count(1).__next__)   # figures numbered in order
    return env
