"""The report in a real browser: Chromium renders it, loads every image, runs no model output,
shows the answer in the first screen, folds the detail, opens every fold and prints them.

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
from test_report import STUDY_PAIRS, TITLE_SCRIPT, build_report, synthetic_config

CHROMIUM = shutil.which("chromium")
NO_CHROMIUM = "chromium not installed (Debian: apt-get install -y chromium); browser test skipped"
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason=NO_CHROMIUM)
TIMEOUT_S = 60
# The reading width and first screen, and the most the folded page may take.
SCREEN = (1400, 1800)
MAX_FOLDED_HEIGHT_PX = 15_000
# Appended to a copy of the report: after load, record what the page really did, then
# open every fold in document order (a fold inside another after it), record whether
# each showed more than its summary, and whether the model output now reads as text.
PROBE = """<script>
window.addEventListener("load", () => {
  const body = document.body;
  const bottom = (id) => Math.round(document.getElementById(id).getBoundingClientRect().bottom);
  const top = (id) => Math.round(document.getElementById(id).getBoundingClientRect().top);
  body.setAttribute("data-image-widths",
    Array.from(document.images).map(img => img.complete ? img.naturalWidth : -1).join(","));
  body.setAttribute("data-title", document.title);
  body.setAttribute("data-summary-bottom", bottom("summary-table"));
  body.setAttribute("data-headline-top", top("headline-table"));
  body.setAttribute("data-folded-height", document.documentElement.scrollHeight);
  const folds = Array.from(document.querySelectorAll("details"));
  body.setAttribute("data-folds-opening", folds.map(fold => {
    const closed = fold.getBoundingClientRect().height;
    const wasOpen = fold.open;
    fold.open = true;
    return wasOpen ? "was open" : String(fold.getBoundingClientRect().height > closed + 20);
  }).join(","));
  body.setAttribute("data-open-height", document.documentElement.scrollHeight);
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


def probed_dom(path: Path, profile: Path) -> str:
    """The DOM Chromium built from a copy of the report at `path` with `PROBE` appended,
    in a window of `SCREEN`."""
    # a JSON string literal, with "</" escaped so that it cannot close the probe's own script
    script = PROBE.replace("PAYLOAD", json.dumps(TITLE_SCRIPT).replace("</", "<\\/"))
    probe = path.with_name("probe.html")
    html = path.read_text(encoding="utf-8")
    probe.write_text(html.replace("</body>", script + "</body>"), encoding="utf-8")
    return chromium(
        "--virtual-time-budget=5000",
        f"--window-size={SCREEN[0]},{SCREEN[1]}",
        "--dump-dom",
        probe.as_uri(),
        profile=profile,
    ).stdout


def body_attribute(dom: str, name: str) -> str | None:
    match = re.search(rf'<body[^>]*\s{name}="([^"]*)"', dom)
    return match.group(1) if match else None


def assert_reads_in_one_screen(dom: str) -> None:
    """The summary ends, and the headline table starts, in the first screen; the folded
    page is shorter than `MAX_FOLDED_HEIGHT_PX`; every fold opens onto more than its
    summary."""
    assert int(body_attribute(dom, "data-summary-bottom")) <= SCREEN[1]
    assert int(body_attribute(dom, "data-headline-top")) < SCREEN[1]
    folded = int(body_attribute(dom, "data-folded-height"))
    assert folded < MAX_FOLDED_HEIGHT_PX
    opening = body_attribute(dom, "data-folds-opening").split(",")
    assert opening and set(opening) <= {"true", "was open"}, opening
    assert int(body_attribute(dom, "data-open-height")) > 2 * folded


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    """A report of two study pairs and the identity control on two datasets and two
    alphas, and the DOM Chromium built from it."""
    root = tmp_path_factory.mktemp("browser")
    path = build_report(root, synthetic_config(pairs=STUDY_PAIRS))
    return path, path.read_text(encoding="utf-8"), probed_dom(path, root / "profile-dom")


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


def test_the_answer_is_in_the_first_screen_and_every_fold_opens(rendered):
    _, html, dom = rendered
    assert html.count("<details") == len(body_attribute(dom, "data-folds-opening").split(","))
    assert_reads_in_one_screen(dom)


def page_count(pdf: Path) -> int:
    return len(re.findall(rb"/Type\s*/Page\b", pdf.read_bytes()))


def test_folds_print_open(rendered, tmp_path):
    """Printed, the folded report has as many pages as the same report with every fold
    open: the folds need no click, nor a script, on paper."""
    path, html, _ = rendered
    opened = tmp_path / "opened.html"
    opened.write_text(html.replace("<details", "<details open"), encoding="utf-8")
    pages = []
    for name, source in (("folded", path), ("opened", opened)):
        pdf = tmp_path / f"{name}.pdf"
        chromium(
            f"--print-to-pdf={pdf}",
            "--no-pdf-header-footer",
            source.as_uri(),
            profile=tmp_path / f"profile-{name}",
        )
        pages.append(page_count(pdf))
    assert pages[0] == pages[1] > 3, pages


def test_screenshot_is_not_blank(rendered, tmp_path):
    path, _, _ = rendered
    shot = tmp_path / "report.png"
    chromium(
        f"--screenshot={shot}",
        f"--window-size={SCREEN[0]},{SCREEN[1]}",
        "--hide-scrollbars",
        path.as_uri(),
        profile=tmp_path / "profile",
    )
    pixels = matplotlib.image.imread(shot)
    assert pixels.shape[:2] == (SCREEN[1], SCREEN[0])
    ink = (pixels[..., :3].min(axis=-1) < 0.9).mean()
    assert 0.02 < ink < 0.9, f"{ink:.3f} of the pixels are not background"
