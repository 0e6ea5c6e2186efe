"""The demo report: one self-contained page (pictures embedded), laid out for a phone, and a check in
headless Chromium that every picture loaded and every table rendered (and that fails when not)."""

import base64
import re
import shutil

import pytest
from PIL import Image

from dlc.report import Section, check_report, main, plot_losses, write_report
from dlc.runs import RunDir

needs_chromium = pytest.mark.skipif(shutil.which("chromium") is None,
                                    reason="needs Debian's chromium (apt-get install chromium, or make report-check)")


@pytest.fixture
def report(tmp_path):
    """A report written by the demo's functions from tiny pictures, a loss plot and two tables."""
    (tmp_path / "report").mkdir()
    Image.new("RGB", (64, 32), (200, 30, 30)).save(tmp_path / "report" / "real.png")
    Image.new("RGB", (640, 64), (30, 30, 200)).save(tmp_path / "report" / "wide.png")  # wider than a phone
    (tmp_path / "dit").mkdir()
    run = RunDir(tmp_path / "dit")
    for step in range(1, 6):
        run.log_metrics(step, loss=1.0 / step)
    plot_losses({"dit": run}, tmp_path / "report" / "losses.png")
    sections = [
        Section("Pictures", "Two pictures.", images=[("report/real.png", "real"), ("report/wide.png", "a wide grid")]),
        Section("Tables", tables=[[{"conditioning": "none", "FID": 91.25}, {"conditioning": "DLC", "FID": 40.5}],
                                  [{"stage": f"stage {i}", **{f"column {c}": c * i for c in range(12)}} for i in range(3)]]),
        Section("Training curves", images=[("report/losses.png", "loss against step")]),
    ]
    html_path, _ = write_report(tmp_path, "a report", "from tiny pictures", sections)
    return html_path


def test_the_page_embeds_every_picture_and_links_no_file(report):
    page = report.read_text()
    sources = re.findall(r'<img data-file="([^"]+)" src="data:image/png;base64,([^"]+)"', page)
    assert [name for name, _ in sources] == ["report/real.png", "report/wide.png", "report/losses.png"]
    for name, data in sources:
        assert base64.b64decode(data) == (report.parent / name).read_bytes()
    assert page.count("<img") == 3 and not re.search(r'(src|href)="(?!data:)', page)
    assert '<meta name=\'viewport\' content=\'width=device-width, initial-scale=1\'>' in page
    assert page.count('<div class="scroll"><table>') == 2  # tables scroll sideways on a narrow screen
    assert "![real](report/real.png)" in (report.parent / "report.md").read_text()  # the Markdown links the files


def test_a_missing_picture_has_no_source_rather_than_a_relative_link(tmp_path):
    html_path, _ = write_report(tmp_path, "t", "", [Section("s", images=[("report/gone.png", "gone")])])
    assert '<img data-file="report/gone.png" alt="gone">' in html_path.read_text()


@pytest.mark.slow
@needs_chromium
def test_chromium_sees_every_picture_and_table_on_a_phone(report, tmp_path):
    shot = tmp_path / "phone.png"
    result = check_report(report, shot)
    assert result.problems == []
    assert (result.images, result.tables, result.viewport_width, result.screen_width) == (3, 2, 390, 390)
    assert result.page_width <= 390  # the wide grid and the wide table fit: nothing scrolls the page sideways
    width, height = Image.open(shot).size
    assert width == 2 * 390 and height > 2 * 844  # the whole page, at the phone's pixel ratio


@pytest.mark.slow
@needs_chromium
def test_the_check_fails_on_a_broken_picture_and_a_missing_one(report, tmp_path, capsys):
    (report.parent / "report" / "wide.png").write_bytes(b"not a png at all")
    html_path, _ = write_report(report.parent, "a report", "", [
        Section("Pictures", images=[("report/real.png", "real"), ("report/wide.png", "broken"),
                                    ("report/gone.png", "missing")]),
        Section("Tables", tables=[[{"a": 1}]])])
    result = check_report(html_path)
    assert result.problems == ["picture report/wide.png did not load", "picture report/gone.png did not load"]
    assert main([str(html_path), "--screenshot", str(tmp_path / "s.png")]) == 1
    assert "report/wide.png did not load" in capsys.readouterr().err and (tmp_path / "s.png").is_file()


@pytest.mark.slow
@needs_chromium
def test_the_check_fails_on_a_page_a_phone_cannot_read(tmp_path):
    page = tmp_path / "report.html"
    body = "<div style='width: 900px'>wide</div><table><tr><th>a</th></tr><tr><td>1</td></tr></table></body></html>"
    page.write_text(f"<!doctype html><html><body>{body}")  # no viewport meta: laid out 980 px wide, then shrunk
    assert check_report(page).problems == ["the page is laid out 980 px wide: it does not fit a 390 px phone screen"]
    page.write_text("<!doctype html><html><head><meta name='viewport' content='width=device-width'></head>"
                    f"<body>{body}")
    assert check_report(page).problems == ["the page is laid out 908 px wide: it does not fit a 390 px phone screen"]
