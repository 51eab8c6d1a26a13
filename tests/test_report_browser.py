"""Reports opened in headless Chromium: no console error, no failed or external request, no missing image.

The pages come from the real code paths: the reduced Fashion-MNIST run of
``small_run.py`` (shared with other tests), and the detection, comparison
and no-attractor pages rendered from report dicts. Chromium is driven over the
DevTools pipe (``mitigate.report.browser``), with the flags that keep it off
the network.
"""

import json

import pytest

from mitigate.compare import compare_reports, write_comparison
from mitigate.report import render_html
from mitigate.report.browser import CHROMIUM_FLAGS, WINDOW_SIZE, check_page, find_chromium

from small_run import small_run
from test_report_render import make_arrays, make_detect_audit, make_no_attractor_audit

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(find_chromium() is None,
                       reason="needs Debian's chromium at /usr/bin/chromium (scripts/bootstrap.sh installs it)"),
]

# Bounding boxes of what must be visible without scrolling: the verdict badge
# and the first scatter figure (before and after retraining, side by side).
ABOVE_THE_FOLD_JS = """(() => {
  const box = (element) => {
    if (!element) return null;
    const r = element.getBoundingClientRect();
    return {top: r.top, bottom: r.bottom, left: r.left, right: r.right, width: r.width, height: r.height};
  };
  const scatter = document.querySelector(".overview figure img");
  return {
    viewport: {width: window.innerWidth, height: window.innerHeight},
    verdict: box(document.querySelector("h1 .badge")),
    scatter: box(scatter),
    scatter_alt: scatter ? scatter.alt : null,
  };
})()"""


@pytest.fixture(scope="module")
def run_report(tmp_path_factory):
    return small_run(tmp_path_factory)


def assert_clean(check):
    assert check.problems == [], "\n".join(check.problems)


def test_flags_keep_browser_offline():
    for flag in ("--headless", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"):
        assert flag in CHROMIUM_FLAGS


def test_run_report_loads_cleanly(run_report, tmp_path):
    check = check_page(run_report / "report.html", screenshot=True,
                       expressions={"fold": ABOVE_THE_FOLD_JS})
    (tmp_path / "report.png").write_bytes(check.screenshot)

    assert_clean(check)
    assert len(check.images) >= 3
    for image in check.images:
        assert image["width"] > 0, image["src"]
    assert check.screenshot.startswith(b"\x89PNG")


def test_run_report_shows_verdict_and_plots_without_scrolling(run_report):
    audit = json.loads((run_report / "report.json").read_text())
    check = check_page(run_report / "report.html", expressions={"fold": ABOVE_THE_FOLD_JS})
    fold = check.values["fold"]
    width, height = WINDOW_SIZE

    assert fold["viewport"] == {"width": width, "height": height}
    assert fold["verdict"] is not None
    assert fold["verdict"]["bottom"] <= height
    assert fold["scatter"] is not None
    assert fold["scatter"]["height"] > 100
    assert fold["scatter"]["bottom"] <= height
    assert fold["scatter"]["right"] <= width
    if "fashion" in audit["data"]["source"]:
        assert "before and after retraining" in fold["scatter_alt"]


def test_detect_and_no_attractor_pages_load_cleanly(tmp_path):
    arrays = make_arrays(n_samples=2_000)
    for key in ("coords_after", "clusters_after"):
        del arrays[key]
    pages = {
        "detect.html": render_html(make_detect_audit(), arrays),
        "none.html": render_html(make_no_attractor_audit(), {}),
    }
    for name, html in pages.items():
        (tmp_path / name).write_text(html, encoding="utf-8")
        check = check_page(tmp_path / name)
        assert_clean(check)
    assert len(check_page(tmp_path / "detect.html").images) == 5


def test_comparison_page_loads_cleanly(tmp_path):
    paths = write_comparison(tmp_path, compare_reports(make_detect_audit(), make_no_attractor_audit()))
    status_js = "document.querySelector('td.status-resolved').textContent"
    check = check_page(paths["html"], expressions={"status": status_js})
    assert_clean(check)
    assert check.values["status"] == "resolved"


def test_broken_page_is_caught(tmp_path):
    # The checks above must be able to fail: each kind of fault is planted here.
    page = tmp_path / "broken.html"
    page.write_text(
        "<!DOCTYPE html><html><head><title>broken</title></head><body>"
        '<img src="missing.png">'
        '<script>console.error("planted error"); notDefined();</script>'
        "</body></html>",
        encoding="utf-8",
    )
    check = check_page(page)
    assert any("planted error" in text for text in check.console_errors)
    assert any("notDefined" in text for text in check.console_errors)
    assert any("missing.png" in text for text in check.failed_requests)
    assert any(url.endswith("missing.png") for url in check.external_requests)
    assert [src for src in check.broken_images if src.endswith("missing.png")]
