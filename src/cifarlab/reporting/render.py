"""Execute the report notebook and convert it to HTML and Markdown."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

log = logging.getLogger("cifarlab.reporting")

__all__ = ["render_report"]


def render_report(notebook: Path, executed: Path, tables: Path, figures: Path, runs: Path,
                  out: Path, profile: str = "", config_files: str = "") -> None:
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
                    "figures": "figures", "profile": profile, "config_files": config_files},
    )
    nb = nbformat.read(executed, as_version=4)
    html, _ = HTMLExporter(exclude_input=True, exclude_input_prompt=True,
                           exclude_output_prompt=True).from_notebook_node(nb)
    (out / "report.html").write_text(html)
    md, _ = MarkdownExporter(exclude_input=True).from_notebook_node(nb)
    (out / "report.md").write_text(md)
    log.info("report written to %s", out)
