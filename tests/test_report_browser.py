"""The report opens offline in a real browser: every figure shows and nothing is fetched.

Uses headless Chromium (tests/browser.py); skips with a reason where it is not installed.
"""

from __future__ import annotations

import base64
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from matplotlib.figure import Figure  # no pyplot: no GUI backend, nothing to close

from browser import check_offline, chromium

pytestmark = pytest.mark.skipif(
    chromium() is None, reason="headless Chromium not installed: apt-get install chromium")


def _png(path: Path, values: list[float]) -> Path:
    fig = Figure(figsize=(2, 1.5), dpi=50)
    fig.add_subplot().plot(values)
    fig.savefig(path)
    return path


def _page(path: Path, body: str, head: str = "") -> Path:
    path.write_text(f'<!DOCTYPE html>\n<html lang="en">\n<head><meta charset="utf-8">'
                    f"<title>Test page</title>{head}</head>\n<body>\n{body}\n</body>\n</html>\n")
    return path


def test_data_uri_image_loads(tmp_path):
    data = base64.b64encode(_png(tmp_path / "a.png", [1, 3, 2]).read_bytes()).decode()
    result = check_offline(_page(tmp_path / "page.html",
                                 f'<img alt="a" src="data:image/png;base64,{data}">'))
    assert result["images"] == result["loaded"] == 1, result
    assert result["broken"] == [] and result["resources"] == [] and result["external"] == []
    assert result["title"] == "Test page"


def test_linked_figure_is_broken_because_the_page_is_copied_alone(tmp_path):
    (tmp_path / "figures").mkdir()
    _png(tmp_path / "figures" / "x.png", [1, 2])  # beside the original, not the copy
    result = check_offline(_page(tmp_path / "page.html", '<img alt="x" src="figures/x.png">'))
    assert result["images"] == 1 and result["loaded"] == 0, result
    assert result["broken"] == ["figures/x.png"]


def test_external_references_are_reported(tmp_path):
    page = _page(tmp_path / "page.html", '<img alt="a" src="https://example.com/a.png">',
                 head='<script src="https://cdn.example.com/x.js"></script>')
    result = check_offline(page)
    assert result["external"] == ["https://cdn.example.com/x.js", "https://example.com/a.png"]
    assert result["broken"] == ["https://example.com/a.png"], result
    assert set(result["resources"]) == set(result["external"])  # tried, and failed


class _Recorder(BaseHTTPRequestHandler):
    seen: list[str] = []

    def do_GET(self) -> None:
        self.seen.append(self.path)
        self.send_error(404)

    def log_message(self, *args) -> None:
        pass


def test_no_request_reaches_even_a_loopback_server(tmp_path):
    _Recorder.seen.clear()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/a.png"
        result = check_offline(_page(tmp_path / "page.html", f'<img alt="a" src="{url}">'))
    finally:
        server.shutdown()
        server.server_close()
    assert _Recorder.seen == [] and result["broken"] == [url], result


def test_rendered_report_is_self_contained(tmp_path):
    """The project's renderer (papermill + nbconvert + standalone_html) on a tiny notebook
    shaped like workflow/notebooks/report.ipynb: Markdown output linking two figures."""
    import nbformat

    from cifarlab.reporting.render import render_report

    figures = tmp_path / "figures"
    figures.mkdir()
    _png(figures / "curves.png", [3, 2, 1.5, 1.2])
    _png(figures / "accuracy.png", [0.3, 0.5, 0.6])
    md = ("# Test report\n\nSome *text* and a table.\n\n| a | b |\n|---|---|\n| 1 | 2 |\n\n"
          "![curves](figures/curves.png)\n\n![accuracy](figures/accuracy.png)\n")
    params = nbformat.v4.new_code_cell(
        'tables = ""\nruns = ""\nfigures = "figures"\nprofile = ""\nconfig_files = ""',
        metadata={"tags": ["parameters"]})
    show = nbformat.v4.new_code_cell(
        f"from IPython.display import Markdown, display\ndisplay(Markdown({md!r}))")
    nb = nbformat.v4.new_notebook(cells=[params, show], metadata={
        "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
        "language_info": {"name": "python"}})
    nbformat.write(nb, tmp_path / "report.ipynb")
    out = tmp_path / "report"
    render_report(tmp_path / "report.ipynb", tmp_path / "executed.ipynb", tmp_path / "tables",
                  figures, tmp_path / "runs", out, profile="browser-test")

    result = check_offline(out / "report.html")
    assert result["images"] == result["loaded"] == 2, result
    assert result["broken"] == [] and result["resources"] == [] and result["external"] == []
    assert result["title"] not in ("", "Notebook"), result
    assert "browser-test" in result["title"]
