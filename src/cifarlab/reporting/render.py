"""Execute the report notebook and convert it to HTML and Markdown."""

from __future__ import annotations

import base64
import html as html_lib
import logging
import re
import shutil
from pathlib import Path

log = logging.getLogger("cifarlab.reporting")

__all__ = ["render_report"]


def render_report(notebook: Path, executed: Path, tables: Path, figures: Path, runs: Path,
                  out: Path, profile: str = "", config_files: str = "",
                  notes: str = "") -> None:
    """Execute the report notebook with papermill and write report.html / report.md."""
    import nbformat
    import papermill
    from nbconvert import HTMLExporter, MarkdownExporter

    out.mkdir(parents=True, exist_ok=True)
    executed.parent.mkdir(parents=True, exist_ok=True)
    fig_out = out / "figures"
    if fig_out.exists():
        shutil.rmtree(fig_out)
    fig_out.mkdir()
    for png in figures.glob("*.png"):  # per-run figures stay in results/figures/runs
        shutil.copy2(png, fig_out / png.name)
    papermill.execute_notebook(
        str(notebook), str(executed), kernel_name="python3", progress_bar=False,
        parameters={"tables": str(Path(tables).resolve()), "runs": str(Path(runs).resolve()),
                    "figures": "figures", "profile": profile, "config_files": config_files,
                    "notes": notes},
    )
    nb = nbformat.read(executed, as_version=4)
    # The "basic" template: the cells' HTML without nbconvert's page, which loads
    # require.js and MathJax from a CDN (an offline reader's browser stalls on them).
    body, _ = HTMLExporter(template_name="basic", exclude_input=True,
                           exclude_input_prompt=True,
                           exclude_output_prompt=True).from_notebook_node(nb)
    title = f"CIFAR-10 with MLPs and CNNs: the {profile or 'unnamed'} profile"
    (out / "report.html").write_text(standalone_html(body, title, out))
    md, _ = MarkdownExporter(exclude_input=True).from_notebook_node(nb)
    (out / "report.md").write_text(md)
    log.info("report written to %s", out)


_CSS = """
body { font: 15px/1.5 system-ui, -apple-system, "Segoe UI", sans-serif; color: #222;
       max-width: 1100px; margin: 2em auto; padding: 0 1em; }
table { border-collapse: collapse; margin: 1em 0; font-size: 13px; }
th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: right; white-space: nowrap; }
th { background: #f3f3f3; }
td:first-child, th:first-child { text-align: left; }
img { max-width: 100%; }
blockquote { border-left: 4px solid #ddd; margin: 1em 0; padding: 0 1em; color: #555; }
code { background: #f5f5f5; padding: 0 3px; }
"""


def standalone_html(body: str, title: str, folder: Path) -> str:
    """One self-contained page: the figures ``body`` links under ``folder`` embedded as
    data URIs, no script and no file or address outside the page, so it can be mailed or
    opened offline."""
    def embed(match: re.Match) -> str:
        path = folder / match.group(2)
        if not path.is_file():
            raise FileNotFoundError(f"the report links {match.group(2)}, which is not in "
                                    f"{folder}; render the figures first")
        data = base64.b64encode(path.read_bytes()).decode()
        return f'{match.group(1)}"data:image/png;base64,{data}"'

    body = re.sub(r'(<img[^>]*?src=)"((?!data:)[^"]+\.png)"', embed, body)
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            f"<title>{html_lib.escape(title)}</title>\n<style>{_CSS}</style>\n</head>\n"
            f"<body>\n{body}\n</body>\n</html>\n")
