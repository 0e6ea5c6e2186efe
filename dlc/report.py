"""The demo's report: one HTML page (and the same content as Markdown) of pictures and tables."""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from pathlib import Path

from .runs import RunDir


@dataclass
class Section:
    """A heading, a paragraph, pictures (paths relative to the report) and tables (lists of rows)."""

    title: str
    text: str = ""
    images: list[tuple[str, str]] = field(default_factory=list)  # (relative path, caption)
    tables: list[list[dict]] = field(default_factory=list)


def _table_html(rows: list[dict]) -> str:
    if not rows:
        return ""
    head = "".join(f"<th>{html.escape(str(k))}</th>" for k in rows[0])
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(_fmt(v))}</td>" for v in row.values()) + "</tr>" for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


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
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; color: #222; }
h1 { margin-bottom: 0.2em; } h2 { border-bottom: 1px solid #ddd; padding-bottom: 0.2em; margin-top: 1.6em; }
figure { display: inline-block; margin: 0.5em 1em 0.5em 0; vertical-align: top; }
figure img { image-rendering: pixelated; border: 1px solid #eee; max-width: 100%; }
figcaption { font-size: 0.85em; color: #555; max-width: 520px; }
table { border-collapse: collapse; margin: 0.6em 0; } td, th { border: 1px solid #ccc; padding: 0.25em 0.6em; }
th { background: #f4f4f4; } p { line-height: 1.45; }
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
            parts_html.append(
                f'<figure><img src="{html.escape(path)}" alt="{html.escape(caption)}">'
                f"<figcaption>{html.escape(caption)}</figcaption></figure>"
            )
            parts_md.append(f"![{caption}]({path})\n\n*{caption}*\n")
        for rows in section.tables:
            parts_html.append(_table_html(rows))
            parts_md.append(_table_md(rows) + "\n")
    html_path, md_path = out_dir / "report.html", out_dir / "report.md"
    html_path.write_text(
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
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
