"""make submission (tools/submission.py): the report printed to PDF and zipped under the
practical's SURNAME(S)_NAME, from a report rendered by the report stage (the made-up run of
tests/test_report.py with a fuller set of results). The PDF's pages are read back: no page ends
on a heading, every line of the AlexNet code is there whole, every figure is on a page."""
import builtins
import os
import re
import subprocess
import zipfile

import pytest
import test_judgements as scenarios
import test_report as made_up

import helpers
from stages.lib.core.common import StageError
from tools import submission

pdfium = pytest.importorskip("pypdfium2")
AUTHOR = "García López, Ana"


@pytest.mark.parametrize("author, name", [
    ("García López, Ana", "Garcia_Lopez_Ana"), ("O'Neil,  Seán Óg", "O_Neil_Sean_Og"),
    ("Müller-Lüdenscheidt, Jürgen", "Muller_Ludenscheidt_Jurgen")])
def test_the_file_is_named_surnames_then_name_in_ascii(author, name):
    assert submission.file_name(author) == name


@pytest.mark.parametrize("author", [None, "Ana García", ", Ana", "García,", "李, 小龙"])
def test_an_author_not_written_surnames_comma_name_is_one_clear_line(author):
    with pytest.raises(StageError, match="report.author"):
        submission.file_name(author)


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A git checkout holding a rendered report (Spanish, written for AUTHOR). The PDF needs
    WeasyPrint's Pango library (.ci/run installs it): without it, these tests skip."""
    try:
        import weasyprint  # noqa: F401
    except OSError as error:
        pytest.skip(f"WeasyPrint cannot load Pango ({error}): no PDF to check")
    root = tmp_path_factory.mktemp("project")
    made_up.write_inputs(root, "es", author=AUTHOR)
    scenarios.well_trained(root)
    made_up.edit_yaml(root, lambda d: d["report"].update(author=AUTHOR))
    scenarios.practical_alexnet(root)
    (root / "stages").mkdir()
    (root / "stages/train.py").write_text("print('the code')\n")
    with pytest.MonkeyPatch.context() as monkeypatch:
        made_up.render(root, monkeypatch, pictures=True)   # the PDF lays real figures out
    for command in (["init", "-q"], ["add", "-A"],
                    ["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "run"]):
        subprocess.run(["git", "-C", str(root), *command], check=True)
    return root


def hand_in(root, monkeypatch, out="submission"):
    monkeypatch.chdir(root)
    submission.main(["--out", out])
    return root / out / "Garcia_Lopez_Ana.pdf", root / out / "Garcia_Lopez_Ana.zip"


@pytest.mark.e2e   # make submission on a rendered report (WeasyPrint)
def test_the_zip_holds_the_pdf_the_html_and_the_code_the_same_bytes_twice(project, monkeypatch):
    pdf, bundle = hand_in(project, monkeypatch)
    with zipfile.ZipFile(bundle) as archive:
        names = archive.namelist()
        assert names[:2] == ["Garcia_Lopez_Ana/Garcia_Lopez_Ana.pdf",
                             "Garcia_Lopez_Ana/Garcia_Lopez_Ana.html"]
        assert "Garcia_Lopez_Ana/code/stages/train.py" in names
        assert "Garcia_Lopez_Ana/code/params.yaml" in names
        assert not any("reports/" in n or "metrics/" in n for n in names)
        assert archive.read(names[0]) == pdf.read_bytes()
        html = archive.read(names[1]).decode()
    assert "figures/" not in html and 'src="data:image/png;base64,' in html
    again = hand_in(project, monkeypatch, out="again")
    assert [p.read_bytes() for p in again] == [pdf.read_bytes(), bundle.read_bytes()]


def page_texts(pdf):
    document = pdfium.PdfDocument(str(pdf))
    return [document[i].get_textpage().get_text_range() for i in range(len(document))], [
        sum(1 for obj in document[i].get_objects() if obj.type == pdfium.raw.FPDF_PAGEOBJ_IMAGE)
        for i in range(len(document))]


@pytest.mark.e2e   # make submission on a rendered report (WeasyPrint)
def test_the_pdfs_pages_keep_headings_with_their_content_and_code_whole(project, monkeypatch):
    pdf, _ = hand_in(project, monkeypatch)
    texts, images = page_texts(pdf)
    markdown = (project / "reports/report.md").read_text()
    headings = [re.sub(r"[`*]", "", line.lstrip("#").strip())
                for line in markdown.splitlines() if line.startswith("#")]
    assert len(texts) > 5 and sum(images) == markdown.count("](figures/")
    document = pdfium.PdfDocument(str(pdf))
    for number, text in enumerate(texts, start=1):
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        assert lines[-1] == f"{number} / {len(texts)}"   # the page number, then the content
        last = lines[-2]
        if any(last.startswith(h[:40]) for h in headings):   # a figure must follow it
            page = document[number - 1]
            found = page.get_textpage().search(last[:30]).get_next()
            heading_bottom = page.get_textpage().get_charbox(found[0])[1]
            assert any(obj.get_bounds()[3] < heading_bottom for obj in page.get_objects()
                       if obj.type == pdfium.raw.FPDF_PAGEOBJ_IMAGE), (number, last)
    # the AlexNet code, wrapped where a line is longer than the page: every character there
    flat = re.sub(r"\s+", "", "".join(texts))
    code = markdown.split("```python\n")[1].split("```")[0]
    for line in code.splitlines():
        assert re.sub(r"\s+", "", line) in flat, line
    assert "García López, Ana" in texts[0]


@pytest.mark.e2e   # make submission on a rendered report (WeasyPrint)
def test_a_report_written_for_another_author_or_none_is_refused(project, monkeypatch, tmp_path):
    monkeypatch.chdir(project)
    made_up.edit_yaml(project, lambda d: d["report"].update(author="Otra, Persona"))
    try:
        with pytest.raises(StageError, match="written for author 'García López, Ana'.*"
                                             "dvc repro report"):
            submission.main(["--out", str(tmp_path / "x")])
    finally:
        made_up.edit_yaml(project, lambda d: d["report"].update(author=AUTHOR))
    monkeypatch.chdir(tmp_path)
    made_up.write(tmp_path / "params.yaml", (project / "params.yaml").read_text())
    with pytest.raises(StageError, match=r"reports/report\.html not found: run `make repro`"):
        submission.main(["--out", "x"])
    assert not (tmp_path / "x").exists() or not any((tmp_path / "x").iterdir())


@pytest.mark.e2e   # make submission on a rendered report (WeasyPrint)
def test_weasyprint_without_pango_is_one_line(project, monkeypatch, tmp_path):
    real_import = builtins.__import__

    def no_pango(name, *args, **kwargs):
        if name == "weasyprint":
            raise OSError("cannot load library 'libpango-1.0-0'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_pango)
    with pytest.raises(StageError, match="apt install libpango.*print reports/report.html"):
        submission.write_pdf(project / "reports/report.html", tmp_path / "r.pdf")
    assert not (tmp_path / "r.pdf").exists()


@pytest.mark.e2e   # make submission on a rendered report (WeasyPrint)
def test_the_command_prints_its_error_as_one_line(project, tmp_path):
    made_up.write(tmp_path / "params.yaml", (project / "params.yaml").read_text())
    made_up.edit_yaml(tmp_path, lambda d: d["report"].update(author="none"))
    done = helpers.run_tool("submission", cwd=tmp_path, env=dict(os.environ), check=False)
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("error: params.yaml: set "
                                                                    "'report.author'")


def test_a_zip_that_fails_midway_leaves_the_previous_one_and_no_part(tmp_path, monkeypatch):
    """The hand-in is written beside its place and renamed in whole: a failure after some
    entries (a full disk, a kill) leaves the last zip as it was and no temporary file."""
    root = tmp_path / "code"
    root.mkdir()
    subprocess.run(["git", "init", "-q", str(root)], check=True)
    (root / "a.py").write_text("print(1)\n")
    subprocess.run(["git", "-C", str(root), "add", "a.py"], check=True)
    pdf, page = tmp_path / "r.pdf", tmp_path / "r.html"
    pdf.write_bytes(b"%PDF-1.7 stand-in")
    page.write_text("<html></html>")
    out = tmp_path / "out" / "X.zip"
    out.parent.mkdir()
    submission.write_zip(out, "X", pdf, page, root)
    before = out.read_bytes()
    real = zipfile.ZipFile.writestr

    def full_after_one(self, info, data, *args, **kwargs):
        if len(self.filelist) >= 1:
            raise OSError(28, "No space left on device")
        return real(self, info, data, *args, **kwargs)

    monkeypatch.setattr(zipfile.ZipFile, "writestr", full_after_one)
    with pytest.raises(OSError):
        submission.write_zip(out, "X", pdf, page, root)
    assert out.read_bytes() == before and [p.name for p in out.parent.iterdir()] == ["X.zip"]
