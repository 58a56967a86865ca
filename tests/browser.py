"""Open an HTML page in headless Chromium with the network cut off and report what it
loaded: whether every image shows, and whether the page asked for anything outside it.

``check_offline`` copies the page alone into an empty folder (so links to files beside it,
e.g. ``figures/x.png``, cannot resolve), adds a script to the copy that records the result
into the DOM after the ``load`` event, and reads it back from ``chromium --dump-dom``.
"""

from __future__ import annotations

import html as html_lib
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
from html.parser import HTMLParser
from pathlib import Path

_ID = "browser-offline-check"

# Runs in the copy only. Data URIs never show in resource timing; any other fetch does,
# failed ones included (file:// loads that fail are left out, but show as broken images).
_SCRIPT = """<script>
addEventListener("load", () => {
  const imgs = Array.from(document.images);
  const ok = (i) => i.complete && i.naturalWidth > 0;
  const result = {
    images: imgs.length,
    loaded: imgs.filter(ok).length,
    broken: imgs.filter((i) => !ok(i)).map((i) => (i.getAttribute("src") || "").slice(0, 80)),
    resources: performance.getEntriesByType("resource").map((e) => e.name),
    title: document.title,
  };
  const pre = document.createElement("pre");
  pre.id = "@ID@";
  pre.textContent = JSON.stringify(result);
  document.body.appendChild(pre);
});
</script>
""".replace("@ID@", _ID)

# No network: every host name (the proxy's included) resolves to nothing, and every
# request, loopback too, goes to a proxy on the discard port, which refuses.
_FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--dump-dom",
          "--virtual-time-budget=10000", "--host-resolver-rules=MAP * ~NOTFOUND",
          "--proxy-server=127.0.0.1:9", "--proxy-bypass-list=<-loopback>",
          "--no-first-run", "--no-default-browser-check", "--disable-background-networking",
          "--disable-component-update", "--disable-sync", "--disable-extensions",
          "--disable-breakpad", "--mute-audio")


def chromium() -> str | None:
    """The path of a Chromium/Chrome binary on PATH, or None."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if path := shutil.which(name):
            return path
    return None


class _Links(HTMLParser):
    """Collects http(s):// (and protocol-relative //) URLs in src/href-like attributes."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if not value:
                continue
            if name == "srcset":
                candidates = [c.split()[0] for c in value.split(",") if c.split()]
            elif name in ("src", "href", "poster", "data", "action"):
                candidates = [value.strip()]
            else:
                continue
            self.urls += [u for u in candidates if re.match(r"(?i)(https?:)?//", u)]


def external_urls(text: str) -> list[str]:
    """The http(s):// URLs referenced in src/href (srcset, poster, data, action) attributes."""
    parser = _Links()
    parser.feed(text)
    parser.close()
    return parser.urls


def check_offline(html: Path, timeout: float = 60) -> dict:
    """Load ``html`` alone in headless Chromium without network; return
    ``{"images", "loaded", "broken", "resources", "title", "external"}``: image count, how
    many decoded, the first 80 characters of the failed ones' src, the URLs the page
    fetched (resource timing; data URIs never appear), document.title, and the
    http(s):// URLs in the original's src/href attributes. Raises RuntimeError if
    Chromium is missing, times out, or the page never fired ``load``."""
    binary = chromium()
    if binary is None:
        raise RuntimeError("headless Chromium not installed: apt-get install chromium")
    text = Path(html).read_text(encoding="utf-8")
    ends = [m.start() for m in re.finditer(r"(?i)</body\s*>", text)]
    at = ends[-1] if ends else len(text)
    with tempfile.TemporaryDirectory(prefix="browser-check-") as tmp:
        page = Path(tmp) / "page" / Path(html).name
        page.parent.mkdir()
        page.write_text(text[:at] + _SCRIPT + text[at:], encoding="utf-8")
        cmd = [binary, *_FLAGS, f"--user-data-dir={Path(tmp) / 'profile'}", page.as_uri()]
        env = {**os.environ, "HOME": tmp}  # keeps ~/.config, ~/.cache, ~/.pki out of it
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                stdin=subprocess.DEVNULL, env=env, start_new_session=True)
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # the browser and its helper processes
            proc.communicate()
            raise RuntimeError(f"chromium did not finish within {timeout} s on {html}") from None
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    dom = out.decode("utf-8", "replace")
    found = re.findall(rf'<pre id="{_ID}">(.*?)</pre>', dom, flags=re.S)
    if not found:
        tail = err.decode("utf-8", "replace")[-2000:]
        raise RuntimeError(f"no result from chromium (exit {proc.returncode}) for {html}; "
                           f"the load event never ran?\n{tail}")
    result = json.loads(html_lib.unescape(found[-1]))
    result["external"] = external_urls(text)
    return result
