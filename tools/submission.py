"""The hand-in: the report as a PDF, and a zip named the way the practical asks for.

    make submission          # python -m tools.submission

Reads params.yaml's `report.author` ("Surname(s), Name", e.g. "García López, Ana") and
reports/report.html (the report stage's output: `make repro`, or `dvc repro report` after
setting the author). Writes, in submission/ (git-ignored), named from the author's name without
accents (Garcia_Lopez_Ana):
  <NAME>.pdf   the report printed by WeasyPrint with its print style (A4, numbered pages, code
               wrapped, headings kept with what follows them)
  <NAME>.zip   <NAME>/<NAME>.pdf, <NAME>/<NAME>.html (the report, one file with its figures)
               and <NAME>/code/: the files git tracks that made it (stages/, params.yaml,
               dvc.yaml, dvc.lock, requirements.txt, README.md)
Both are the same bytes for the same report and code. A problem (no author, no report, a report
written for another author, WeasyPrint without its Pango library) is one line and exit 1."""
import argparse
import html as markup
import re
import subprocess
import sys
import unicodedata
import zipfile
from pathlib import Path

from stages.lib.core import params
from stages.lib.core.common import StageError
from stages.lib.core.files import temporary_beside, write_atomic
from stages.lib.wording import author_of

CODE = ("stages", "params.yaml", "dvc.yaml", "dvc.lock", "requirements.txt", "README.md")
ZIP_TIME = (1980, 1, 1, 0, 0, 0)   # every entry's date: the same zip for the same files


def file_name(author):
    """"García López, Ana" -> "Garcia_Lopez_Ana": the practical's SURNAME(S)_NAME, in ASCII
    letters and digits joined by _ (a name file systems and mail programs keep intact)."""
    if author is None or "," not in author:
        raise StageError("params.yaml: set 'report.author' to your name as 'Surname(s), Name' "
                         f"(e.g. 'García López, Ana') for the hand-in, got {author!r}")
    surnames, name = (part.strip() for part in author.split(",", 1))
    ascii_words = unicodedata.normalize("NFKD", f"{surnames} {name}").encode(
        "ascii", "ignore").decode()
    words = re.findall(r"[A-Za-z0-9]+", ascii_words)
    if not surnames or not name or not words:
        raise StageError(f"params.yaml: 'report.author' {author!r} has no surname or no name "
                         "written in letters: write 'Surname(s), Name'")
    return "_".join(words)


def check_report(html, author):
    """The report must be there and written for this author (the report stage prints the
    author's name; a name set afterwards needs `dvc repro report`)."""
    if not html.is_file():
        raise StageError(f"{html} not found: run `make repro` (or `dvc repro report`) first")
    found = re.search(r'<meta name="author" content="([^"]*)">', html.read_text())
    written_for = found and markup.unescape(found.group(1))
    if written_for != author:
        raise StageError(f"{html} was written for author {written_for!r}, params.yaml says "
                         f"{author!r}: run `dvc repro report` first")


def write_pdf(html, pdf):
    """The report's PDF, printed by WeasyPrint from its one-file HTML."""
    try:
        import weasyprint
    except OSError as error:   # the Python package is there, its Pango library is not
        raise StageError(f"WeasyPrint cannot load its Pango library ({error}); install it "
                         "(Debian/Ubuntu: apt install libpango-1.0-0 libpangoft2-1.0-0; "
                         "macOS: brew install pango), or print reports/report.html to PDF from "
                         "your browser") from None
    write_atomic(pdf, weasyprint.HTML(filename=str(html)).write_pdf())


def code_files(root):
    """The files git tracks under CODE, in order."""
    listed = subprocess.run(["git", "-C", str(root), "ls-files", "-z", "--", *CODE],
                            capture_output=True, text=True)
    if listed.returncode != 0:
        raise StageError(f"git ls-files failed in {root}: {listed.stderr.strip()}: the hand-in "
                         "takes its code from a git checkout")
    return sorted(p for p in listed.stdout.split("\0") if p and (root / p).is_file())


def write_zip(path, name, pdf, html, root):
    """<name>.zip: the PDF, the HTML and the code under <name>/, fixed dates, sorted."""
    entries = [(f"{name}/{name}.pdf", pdf), (f"{name}/{name}.html", html),
               *((f"{name}/code/{p}", root / p) for p in code_files(root))]
    with temporary_beside(path) as staging:   # written whole, or not at all
        with zipfile.ZipFile(staging, "w", zipfile.ZIP_DEFLATED) as archive:
            for arcname, source in entries:
                info = zipfile.ZipInfo(arcname, ZIP_TIME)
                info.compress_type, info.external_attr = zipfile.ZIP_DEFLATED, 0o644 << 16
                archive.writestr(info, Path(source).read_bytes())
        staging.replace(path)


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="submission", help="folder to write (submission/)")
    args = parser.parse_args(argv)
    author = author_of(params.load())
    name = file_name(author)
    html = Path("reports/report.html")
    check_report(html, author)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    pdf = out / f"{name}.pdf"
    write_pdf(html, pdf)
    write_zip(out / f"{name}.zip", name, pdf, html, Path.cwd())
    print(f"submission: {pdf} and {out / f'{name}.zip'} (hand in the zip)", flush=True)


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except StageError as error:
        sys.exit(f"error: {error}")
