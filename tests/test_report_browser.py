"""The report in a real browser: Chromium renders it, loads every image, runs no model output.

Needs Debian's `chromium` package (`apt-get install -y chromium`); skipped where it is
not installed. Chromium runs offline: no sandbox (containers), no GPU, a fresh profile,
and no background networking, component updates, sync or first-run tasks.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import matplotlib.image
import pytest
from test_report import TITLE_SCRIPT, build_report, synthetic_config

CHROMIUM = shutil.which("chromium")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None,
    reason="chromium not installed (Debian: apt-get install -y chromium); browser test skipped",
)
TIMEOUT_S = 60
WINDOW = (1280, 2400)
# Appended to a copy of the report: after load, record what the page really did.
PROBE = """<script>
window.addEventListener("load", () => {
  const body = document.body;
  body.setAttribute("data-image-widths",
    Array.from(document.images).map(img => img.complete ? img.naturalWidth : -1).join(","));
  body.setAttribute("data-title", document.title);
  body.setAttribute("data-payload-visible", String(body.innerText.includes(PAYLOAD)));
});
</script>"""


def chromium(*args: str, profile: Path) -> subprocess.CompletedProcess:
    """Run headless Chromium offline with a fresh profile."""
    command = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        f"--user-data-dir={profile}",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        *args,
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT_S)
    assert result.returncode == 0, result.stderr[-2000:]
    return result


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    """A one-pair, one-dataset, one-alpha report, and the DOM Chromium built from it."""
    root = tmp_path_factory.mktemp("browser")
    config = synthetic_config(datasets=1, alphas=(0.5,), pairs=("toy-grpo",))
    path = build_report(root, config)
    html = path.read_text(encoding="utf-8")
    probe = path.with_name("probe.html")
    # a JSON string literal, with "</" escaped so that it cannot close the probe's own script
    script = PROBE.replace("PAYLOAD", json.dumps(TITLE_SCRIPT).replace("</", "<\\/"))
    probe.write_text(html.replace("</body>", script + "</body>"), encoding="utf-8")
    dom = chromium(
        "--virtual-time-budget=5000", "--dump-dom", probe.as_uri(), profile=root / "profile-dom"
    ).stdout
    return path, html, dom


def body_attribute(dom: str, name: str) -> str | None:
    match = re.search(rf'<body[^>]*\s{name}="([^"]*)"', dom)
    return match.group(1) if match else None


def test_every_image_loads(rendered):
    _, html, dom = rendered
    widths = body_attribute(dom, "data-image-widths")
    assert widths, "the probe did not run: no image widths in the DOM"
    widths = [int(w) for w in widths.split(",")]
    assert len(widths) == html.count("<img ")
    assert all(width > 0 for width in widths), widths


def test_model_output_is_shown_as_text_and_never_runs(rendered):
    _, html, dom = rendered
    title = re.search(r"<title>(.*?)</title>", html).group(1)
    assert body_attribute(dom, "data-title") == title  # the payload did not retitle the page
    assert body_attribute(dom, "data-xss") is None  # nor did its onerror handler run
    assert body_attribute(dom, "data-payload-visible") == "true"


def test_headline_table_is_in_the_dom(rendered):
    _, _, dom = rendered
    table = re.search(r'<table id="headline-table".*?</table>', dom, flags=re.S)
    assert table, "no headline table"
    assert "toy-grpo (GRPO)" in table.group(0)
    assert "activation intensity" in table.group(0)


def test_screenshot_is_not_blank(rendered, tmp_path):
    path, _, _ = rendered
    shot = tmp_path / "report.png"
    chromium(
        f"--screenshot={shot}",
        f"--window-size={WINDOW[0]},{WINDOW[1]}",
        "--hide-scrollbars",
        path.as_uri(),
        profile=tmp_path / "profile",
    )
    pixels = matplotlib.image.imread(shot)
    assert pixels.shape[:2] == (WINDOW[1], WINDOW[0])
    ink = (pixels[..., :3].min(axis=-1) < 0.9).mean()
    assert 0.02 < ink < 0.9, f"{ink:.3f} of the pixels are not background"
