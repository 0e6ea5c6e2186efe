"""The demo's report: one self-contained HTML page (and the same content as Markdown) of pictures
and tables.

``report.html`` embeds its pictures (``data:`` URIs), so the file alone can be moved, mailed or
published; it is laid out for a phone as well as a desktop (viewport meta, images that shrink to
the width, tables that scroll sideways). ``report.md`` links the picture files beside it.
``check_report`` opens the page in headless Chromium at a phone's size and says whether every
picture loaded and every table rendered (``make report-check``; ``python -m dlc.report PAGE``).
"""

from __future__ import annotations

import argparse
import base64
import html
import mimetypes
import sys
from dataclasses import dataclass, field
from pathlib import Path

from .errors import DLCError
from .runs import RunDir


@dataclass
class Section:
    """A heading, a paragraph, pictures (paths relative to the report) and tables (lists of rows)."""

    title: str
    text: str = ""
    images: list[tuple[str, str]] = field(default_factory=list)  # (relative path, caption)
    tables: list[list[dict]] = field(default_factory=list)


def data_uri(path: Path) -> str:
    """The file as a ``data:`` URI (base64), its type from its suffix."""
    mime = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    return f"data:{mime};base64,{base64.b64encode(path.read_bytes()).decode('ascii')}"


def _image_html(out_dir: Path, path: str, caption: str) -> str:
    """A figure with the picture embedded; a missing file leaves an image without a source, which
    the page shows by its caption and ``check_report`` reports as not loaded."""
    file = out_dir / path
    src = f' src="{data_uri(file)}"' if file.is_file() else ""
    return (f'<figure><img data-file="{html.escape(path)}"{src} alt="{html.escape(caption)}">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>")


def _table_html(rows: list[dict]) -> str:
    if not rows:
        return ""
    head = "".join(f"<th>{html.escape(str(k))}</th>" for k in rows[0])
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(_fmt(v))}</td>" for v in row.values()) + "</tr>" for row in rows
    )
    return f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'


def _table_md(rows: list[dict]) -> str:
    if not rows:
        return ""
    keys = list(rows[0])
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(_fmt(row[k]) for k in keys) + " |" for row in rows]
    return "\n".join(lines)


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None else str(value)


STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em; color: #222; }
h1 { margin-bottom: 0.2em; } h2 { border-bottom: 1px solid #ddd; padding-bottom: 0.2em; margin-top: 1.6em; }
figure { display: inline-block; margin: 0.5em 1em 0.5em 0; vertical-align: top; max-width: 100%; }
figure img { image-rendering: pixelated; border: 1px solid #eee; max-width: 100%; height: auto; }
figcaption { font-size: 0.85em; color: #555; max-width: 520px; }
.scroll { overflow-x: auto; max-width: 100%; }
table { border-collapse: collapse; margin: 0.6em 0; } td, th { border: 1px solid #ccc; padding: 0.25em 0.6em; }
th { background: #f4f4f4; } p { line-height: 1.45; }
@media (max-width: 600px) {
  body { margin: 1em auto; font-size: 15px; } h1 { font-size: 1.4em; }
  figure { display: block; margin: 0.5em 0; } td, th { padding: 0.2em 0.4em; }
}
"""


def write_report(out_dir: str | Path, title: str, intro: str, sections: list[Section]) -> tuple[Path, Path]:
    """Write ``report.html`` and ``report.md`` into ``out_dir``; returns both paths."""
    out_dir = Path(out_dir)
    parts_html = [f"<h1>{html.escape(title)}</h1><p>{html.escape(intro)}</p>"]
    parts_md = [f"# {title}\n\n{intro}\n"]
    for section in sections:
        parts_html.append(f"<h2>{html.escape(section.title)}</h2>")
        parts_md.append(f"## {section.title}\n")
        if section.text:
            parts_html.append(f"<p>{html.escape(section.text)}</p>")
            parts_md.append(section.text + "\n")
        for path, caption in section.images:
            parts_html.append(_image_html(out_dir, path, caption))
            parts_md.append(f"![{caption}]({path})\n\n*{caption}*\n")
        for rows in section.tables:
            parts_html.append(_table_html(rows))
            parts_md.append(_table_md(rows) + "\n")
    html_path, md_path = out_dir / "report.html", out_dir / "report.md"
    html_path.write_text(
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>{html.escape(title)}</title>"
        f"<style>{STYLE}</style></head><body>{''.join(parts_html)}</body></html>"
    )
    md_path.write_text("\n".join(parts_md))
    return html_path, md_path


def plot_losses(runs: dict[str, RunDir], path: str | Path, key: str = "loss") -> Path | None:
    """One panel per run: the logged ``key`` against the step. None when nothing was logged."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = {name: [r for r in run.read_metrics() if key in r] for name, run in runs.items()}  # not eval rows
    curves = {name: rows for name, rows in curves.items() if rows}
    if not curves:
        return None
    fig, axes = plt.subplots(1, len(curves), figsize=(3.6 * len(curves), 2.8), squeeze=False)
    for ax, (name, rows) in zip(axes[0], curves.items()):
        ax.plot([r["step"] for r in rows], [r[key] for r in rows], lw=1)
        ax.set_title(name)
        ax.set_xlabel("step")
        ax.set_ylabel(key)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


# ---- checking the page in a browser --------------------------------------------------------------

PHONE = (390, 844)  # CSS pixels of a common phone's screen

CHECK_SCRIPT = """(async () => {
  const images = [...document.images];
  await Promise.all(images.map(img => img.decode().catch(() => null)));
  const tables = [...document.querySelectorAll("table")];
  const drawn = el => { const box = el.getBoundingClientRect(); return box.width > 0 && box.height > 0; };
  return {
    images: images.length,
    broken_images: images.filter(img => !(img.complete && img.naturalWidth > 0 && drawn(img)))
                         .map(img => img.dataset.file || img.getAttribute("src") || "(no src)"),
    tables: tables.length,
    empty_tables: tables.map((t, i) => (drawn(t) && t.rows.length > 1 && t.rows[1].cells.length > 0) ? -1 : i)
                        .filter(i => i >= 0),
    external: [...document.querySelectorAll("[src], link[href]")]
                .map(el => el.getAttribute("src") || el.getAttribute("href")).filter(url => !url.startsWith("data:")),
    page_width: document.documentElement.scrollWidth,
    viewport_width: window.innerWidth,
    screen_width: window.screen.width,
  };
})()"""


class ReportCheckFailed(DLCError, RuntimeError):
    """The page, opened in a browser, has a picture that did not load or a table that did not render."""


@dataclass
class ReportCheck:
    """What the browser saw: counts, what failed, and the page's width against the screen's."""

    images: int
    broken_images: list[str]
    tables: int
    empty_tables: list[int]  # indices, in page order
    external: list[str]  # sources the page would fetch from elsewhere (none for a self-contained page)
    page_width: int  # what the page lays out
    viewport_width: int  # the layout viewport: the screen's, for a page with a viewport meta tag that fits
    screen_width: int
    screenshot: Path | None = None

    @property
    def problems(self) -> list[str]:
        problems = [f"picture {name} did not load" for name in self.broken_images]
        problems += [f"table {i + 1} of {self.tables} did not render" for i in self.empty_tables]
        problems += [f"the page links {url} instead of embedding it" for url in self.external]
        width = max(self.page_width, self.viewport_width)
        if width > self.screen_width:  # shrunk to fit (no viewport meta tag) or scrolling sideways
            problems.append(f"the page is laid out {width} px wide: it does not fit a {self.screen_width} px phone screen")
        return problems

    def summary(self) -> str:
        shot = f"; screenshot {self.screenshot}" if self.screenshot else ""
        return (f"{self.images - len(self.broken_images)}/{self.images} pictures loaded, "
                f"{self.tables - len(self.empty_tables)}/{self.tables} tables rendered, page {self.page_width} px "
                f"wide on a {self.screen_width} px phone screen{shot}")


def check_report(page: str | Path, screenshot: str | Path | None = None, size: tuple[int, int] = PHONE) -> ReportCheck:
    """Open ``page`` in headless Chromium as a phone of ``size`` CSS pixels would (its viewport
    meta honoured), check every picture and table, and optionally save a full-page screenshot.
    Raises ``BrowserError`` when there is no Chromium; the result's ``problems`` list what failed."""
    from .browser import Chromium

    page = Path(page)
    if not page.is_file():
        raise ReportCheckFailed(f"{page} does not exist: write the report first (make demo)")
    with Chromium() as browser:
        browser.open(page.resolve().as_uri(), width=size[0], height=size[1], mobile=True, scale=2)
        result = ReportCheck(**browser.evaluate(CHECK_SCRIPT))
        if screenshot is not None:
            result.screenshot = browser.screenshot(screenshot)
    return result


def main(argv: list[str] | None = None) -> int:
    """``python -m dlc.report PAGE``: check a report in headless Chromium (what ``make report-check`` runs)."""
    parser = argparse.ArgumentParser(prog="python -m dlc.report", description=main.__doc__)
    parser.add_argument("page", help="the report.html to check")
    parser.add_argument("--screenshot", default=None, help="PNG to write (default: PAGE's name with -phone.png)")
    args = parser.parse_args(argv)
    page = Path(args.page)
    try:
        result = check_report(page, args.screenshot or page.with_name(page.stem + "-phone.png"))
        if result.problems:
            raise ReportCheckFailed(f"{page}: " + "; ".join(result.problems))
    except DLCError as e:
        print(f"report check: error: {e}", file=sys.stderr)
        return 1
    print(f"{page}: {result.summary()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
