"""The HTML reports in a real browser: Playwright driving Debian's Chromium (/usr/bin/chromium).

`.ci/run` installs Chromium; locally these tests skip, saying why, when it is absent. One browser
serves the whole module. axe-core (shipped inside the axe-playwright-python package) is injected
by the test only, through the DevTools protocol; it is never part of a report.
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

import pytest

from coherence_diag.batch import BatchOptions
from coherence_diag.gate import load_policy
from coherence_diag.reports import build_reports
from tests.conftest import REPO
from tests.report.conftest import IMG_PAYLOAD, SCRIPT_PAYLOAD, sample

pytestmark = pytest.mark.browser

CHROMIUM = Path(os.environ.get("COHERENCE_DIAG_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--no-first-run",
]
if not CHROMIUM.exists() and os.environ.get("CI"):
    raise RuntimeError(f"CI must run the browser tests: no Chromium at {CHROMIUM} (.ci/run installs it with apt-get)")
if not CHROMIUM.exists():
    pytest.skip(
        f"browser tests need Chromium at {CHROMIUM} (apt-get install chromium; .ci/run installs it)", allow_module_level=True
    )
sync_api = pytest.importorskip("playwright.sync_api", reason="browser tests need the playwright package (the test extra)")


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture(scope="module")
def site(tmp_path_factory, hostile_trace, bad_trace):
    """A sample with a finding, a clean one, a hostile trace and a broken file; every section on:
    a baseline and a policy."""
    out = tmp_path_factory.mktemp("browser-site")
    options = BatchOptions(baseline=sample("healthy"), policy=load_policy(REPO / "policies" / "serving-default.yaml"))
    traces = [sample("burst-amplification"), sample("healthy"), str(hostile_trace), str(bad_trace)]
    build_reports(traces, out, options=options, jobs=1)
    return out


PAGES = ["index.html", "burst-amplification.html", "healthy.html", "hostile.html"]


class Watched:
    """A page with listeners on every request, console message, page error and dialog."""

    def __init__(self, browser, **context_options):
        self.context = browser.new_context(**context_options)
        self.page = self.context.new_page()
        self.requests: list[str] = []
        self.errors: list[str] = []
        self.dialogs: list[str] = []
        self.context.route("**/*", self._route)
        self.page.on("console", lambda m: self.errors.append(f"console {m.type}: {m.text}") if m.type in ("error", "warning") else None)
        self.page.on("pageerror", lambda e: self.errors.append(f"page error: {e}"))
        self.page.on("dialog", self._dialog)

    def _route(self, route):
        self.requests.append(route.request.url)
        if route.request.url.startswith("file://"):
            route.continue_()
        else:
            route.abort()

    def _dialog(self, dialog):
        self.dialogs.append(dialog.message)
        dialog.dismiss()

    def open(self, path: Path, fragment: str = ""):
        self.page.goto(path.as_uri() + fragment)
        self.page.wait_for_load_state("load")
        return self.page

    def close(self):
        self.context.close()


@pytest.fixture
def watched(browser):
    opened: list[Watched] = []

    def make(**options) -> Watched:
        opened.append(Watched(browser, **options))
        return opened[-1]

    yield make
    for w in opened:
        w.close()


@pytest.mark.parametrize("name", PAGES)
def test_no_console_error_and_no_request_but_the_file(site, watched, name):
    w = watched()
    w.open(site / name)
    assert w.errors == []
    assert w.requests == [(site / name).as_uri()]


def test_readable_without_javascript(site, watched):
    w = watched(java_script_enabled=False)
    page = w.open(site / "index.html")
    rows = page.locator("#traces tbody tr")
    assert rows.count() == 4
    assert rows.nth(0).inner_text().startswith("1")  # worst first without the sorter
    assert "not a Parquet file" in rows.nth(0).inner_text()
    assert page.locator("th button").count() == 0  # the sorter did not run
    report = w.open(site / "burst-amplification.html")
    assert report.locator("#finding-burst-amplification").is_visible()
    assert "Short arrival bursts" in report.locator("#findings").inner_text()
    assert report.locator("#cannot-tell").is_visible() and report.locator("#baseline").is_visible() and report.locator("#gate").is_visible()
    assert report.locator(".chart-panel svg").count() == 9  # inline SVG: no script draws the charts (before/after: a baseline is given)
    assert report.locator("#chart-disruption-timeline svg").is_visible()


def test_the_sorter_sorts_by_a_column(site, watched):
    page = watched().open(site / "index.html")
    page.locator("th button", has_text="CI").click()
    keys = page.locator("#traces tbody tr td:nth-child(6)").evaluate_all("cells => cells.map(c => c.dataset.key)")
    measured = [float(k) for k in keys if k]
    assert measured == sorted(measured) and keys[-1] == ""  # n/a last
    assert page.locator("th[aria-sort=ascending]").count() == 1


def test_index_link_lands_on_the_finding(site, watched):
    page = watched(viewport={"width": 1000, "height": 700}).open(site / "index.html")
    page.locator('a[href="burst-amplification.html#finding-burst-amplification"]').click()
    page.wait_for_load_state("load")
    assert page.url.endswith("burst-amplification.html#finding-burst-amplification")
    target = page.locator("#finding-burst-amplification")
    assert target.evaluate("e => e.matches(':target')")
    top = target.evaluate("e => e.getBoundingClientRect().top")
    assert 0 <= top < 5  # scrolled to the top of the viewport
    assert page.evaluate("window.scrollY") > 300


# Shapes with an area or a stroke that the browser laid out, per chart: a blank chart has only its
# frame (a background rect, axis domains).
DRAWN_SHAPES = """svg => Array.from(svg.querySelectorAll('path, rect, line, circle, text')).filter(e => {
    const b = e.getBBox();
    return (b.width > 0 || b.height > 0) && getComputedStyle(e).visibility !== 'hidden';
}).length"""


@pytest.mark.parametrize("name", ["burst-amplification.html", "healthy.html", "hostile.html"])
def test_every_chart_is_drawn_and_not_blank(site, watched, name):
    w = watched(viewport={"width": 1100, "height": 900})
    page = w.open(site / name)
    charts = page.locator(".chart-panel svg")
    assert charts.count() >= 8
    for i in range(charts.count()):
        svg = charts.nth(i)
        vid = svg.evaluate("e => e.closest('section.chart').id")
        box = svg.bounding_box()
        assert box and box["width"] > 200 and box["height"] > 100, (vid, box)
        assert svg.evaluate(DRAWN_SHAPES) > 20, vid
        # Pixels: a chart's screenshot holds lines, bars and text; a blank panel compresses to almost nothing.
        assert len(svg.screenshot()) > 6_000, vid
    assert w.errors == [] and w.requests == [(site / name).as_uri()]


def _background(page) -> str:
    return page.evaluate("getComputedStyle(document.documentElement).backgroundColor")


def test_dark_and_print_render(site, watched):
    w = watched()
    page = w.open(site / "burst-amplification.html")
    assert _background(page) == "rgb(255, 255, 255)"
    page.emulate_media(color_scheme="dark")
    assert _background(page) == "rgb(13, 17, 23)"
    text = page.evaluate("getComputedStyle(document.body).color")
    assert text == "rgb(230, 237, 243)"
    assert len(page.screenshot(full_page=False)) > 10_000  # a rendered page, not a blank one
    panel = page.locator("#chart-utilization-heatmap .chart-panel")
    assert panel.evaluate("e => getComputedStyle(e).backgroundColor") == "rgb(255, 255, 255)"  # charts keep their light panel
    page.emulate_media(media="print", color_scheme="dark")
    assert _background(page) == "rgb(255, 255, 255)"  # print is light whatever the scheme
    assert page.locator("nav").is_hidden()
    assert page.locator("#finding-burst-amplification").is_visible()
    assert len(page.pdf()) > 10_000
    assert w.errors == []


AXE = resources.files("axe_playwright_python").joinpath("axe.min.js").read_text("utf-8")


@pytest.mark.parametrize("scheme", ["light", "dark"])
@pytest.mark.parametrize("name", ["index.html", "burst-amplification.html"])
def test_no_serious_accessibility_violation(site, watched, name, scheme):
    page = watched(color_scheme=scheme).open(site / name)
    page.evaluate(AXE)  # through the DevTools protocol: the page's CSP does not apply to it
    results = page.evaluate("axe.run(document, {resultTypes: ['violations']})")
    serious = [
        f"{v['id']} ({v['impact']}): {v['help']} at {[n['target'] for n in v['nodes']][:3]}"
        for v in results["violations"]
        if v["impact"] in ("serious", "critical")
    ]
    assert serious == []


def test_hostile_names_are_inert_text(site, watched):
    w = watched()
    page = w.open(site / "hostile.html")
    page.wait_for_timeout(200)
    assert w.dialogs == []
    assert page.locator("script").count() == 0
    assert page.locator("img").count() == 0
    assert SCRIPT_PAYLOAD in page.locator("#indices").inner_text()  # the pool names, shown as text
    assert SCRIPT_PAYLOAD in page.locator("#trace").inner_text()  # the env name
    # In the charts too: the pool and device names are axis labels, legends and table cells, as text.
    labels = page.locator(".chart-panel svg text").all_text_contents()
    assert any(SCRIPT_PAYLOAD[:8] in t for t in labels) and any(IMG_PAYLOAD[:4] in t for t in labels)
    assert page.locator("svg script, svg foreignObject, svg image, svg a, svg [onload], svg [onerror]").count() == 0
    assert IMG_PAYLOAD in page.locator("#charts").text_content()  # the numbers tables (closed <details>) hold the names as text
    index = w.open(site / "index.html")
    assert w.dialogs == [] and index.locator("img").count() == 0 and index.locator("script").count() == 1
