"""The entry and search pages in a real browser: Debian's chromium driven by Playwright (never its own browsers).

Over the served fake database (tests/jobs/conftest.py): SM-P41068-F1 is a real AFDB model whose pLDDT spans
all four bands. Checked: the Mol* viewer loads the model with the `plddt-confidence` theme and the picture
shows pLDDT colours; the PAE heatmap is L x L and equal to the server's PAE PNG; the pLDDT plot has L bars;
search leads to the entry; fragments switch; without viewer files the page says so and the plots still work;
markup in values runs nothing; and no request leaves 127.0.0.1 (every other request is recorded and aborted).
"""

from __future__ import annotations

import base64
import colorsys
import time
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import pytest
from conftest import unavailable

from structome.jobs.serve import pages, viewer_assets
from structome.jobs.serve.viewer_assets import ViewerAssets

pytestmark = pytest.mark.slow

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--enable-unsafe-swiftshader",
    "--use-angle=swiftshader",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
LENGTH = 196  # residues of SM-P41068-F1
VIEWER_TIMEOUT_MS = 45_000
THEMES_JS = """() => viewerInstance.plugin.managers.structure.hierarchy.current.structures.flatMap(
    s => s.components.flatMap(c => c.representations.map(r => r.cell.transform.params.colorTheme.name)))"""
# The data block (entryId) of the model in the viewer.
MODEL_JS = "viewerInstance.plugin.managers.structure.hierarchy.current.structures[0]?.cell.obj?.data.models[0].entryId"
# The screenshot (PNG, base64) -> RGBA bytes (base64), decoded by the browser itself.
DECODE_PNG_JS = """async (png) => {
    const raw = atob(png);
    const bytes = new Uint8Array(raw.length);
    for (let i = 0; i < raw.length; i++) bytes[i] = raw.charCodeAt(i);
    const image = await createImageBitmap(new Blob([bytes], { type: 'image/png' }));
    const canvas = new OffscreenCanvas(image.width, image.height);
    const context = canvas.getContext('2d');
    context.drawImage(image, 0, 0);
    const pixels = context.getImageData(0, 0, image.width, image.height).data;
    let text = '';
    for (let i = 0; i < pixels.length; i += 0x8000) {
        text += String.fromCharCode.apply(null, pixels.subarray(i, i + 0x8000));
    }
    return [image.width, image.height, btoa(text)];
}"""
# Pixels of canvas#pae that differ (any channel by more than 1) from the server's PAE PNG, drawn the same size.
PAE_MISMATCH_JS = """async (url) => {
    const image = await createImageBitmap(await (await fetch(url)).blob());
    const pae = document.getElementById('pae');
    const canvas = new OffscreenCanvas(image.width, image.height);
    const context = canvas.getContext('2d');
    context.drawImage(image, 0, 0);
    const expected = context.getImageData(0, 0, image.width, image.height).data;
    const shown = pae.getContext('2d').getImageData(0, 0, pae.width, pae.height).data;
    if (image.width !== pae.width || image.height !== pae.height) return -1;
    let differ = 0;
    for (let i = 0; i < shown.length; i += 4) {
        for (let c = 0; c < 3; c++) if (Math.abs(shown[i + c] - expected[i + c]) > 1) { differ++; break; }
    }
    return differ;
}"""


def chromium_or_skip() -> None:
    """Chromium and Playwright are test requirements (skipped here when missing, failed in CI)."""
    problem = None
    if not CHROMIUM.exists():
        problem = f"{CHROMIUM} is not installed (Debian package chromium)"
    else:
        try:
            import playwright.sync_api  # noqa: F401
        except ImportError:
            problem = "playwright (PyPI) is not installed"
    if problem:
        unavailable(problem)


@pytest.fixture(scope="module")
def browser():
    chromium_or_skip()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


class Session:
    """A fresh browser context that lets only the test server through; everything else is recorded, aborted."""

    def __init__(self, browser, server_url: str):
        self.origin = urlsplit(server_url)
        self.external: list[str] = []
        self.errors: list[str] = []
        self.dialogs: list[str] = []  # alert() from injected markup would land here
        self.context = browser.new_context(viewport={"width": 1280, "height": 1000})
        self.context.route("**/*", self._route)
        self.context.on("request", self._record)
        self.page = self.context.new_page()
        self.page.on("pageerror", lambda error: self.errors.append(str(error)))
        self.page.on("websocket", lambda socket: self._record_url(socket.url))
        self.page.on("dialog", self._dialog)

    def local(self, url: str) -> bool:
        parts = urlsplit(url)
        return parts.scheme in ("data", "blob") or (parts.hostname == "127.0.0.1" and parts.port == self.origin.port)

    def _record_url(self, url: str) -> None:
        if not self.local(url):
            self.external.append(url)

    def _record(self, request) -> None:
        self._record_url(request.url)

    def _route(self, route) -> None:
        if self.local(route.request.url):
            route.continue_()
        else:
            route.abort()

    def _dialog(self, dialog) -> None:
        self.dialogs.append(dialog.message)
        dialog.dismiss()

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def session(browser, server_url):
    session = Session(browser, server_url)
    yield session
    session.close()
    assert session.external == [], "requests left 127.0.0.1"
    assert session.errors == [], "uncaught errors in the page"
    assert session.dialogs == [], "a dialog opened"


@pytest.fixture
def viewer_files(structome_server, server_url):
    """The server was started with the pinned viewer files (fetched once per session)."""
    if not structome_server.viewer.available:
        unavailable(f"pdbe-molstar {viewer_assets.VERSION} could not be fetched: {structome_server.viewer.problem}")


def band_hues() -> np.ndarray:
    """Hue (degrees) of the four AFDB pLDDT colours: very high 217, confident 197, low 51, very low 18."""
    rgb = [tuple(int(colour[i : i + 2], 16) / 255 for i in (1, 3, 5)) for _, _, colour in pages.PLDDT_BANDS]
    return np.array([colorsys.rgb_to_hsv(*c)[0] * 360 for c in rgb])


def band_pixel_counts(rgba: np.ndarray, tolerance_deg: float = 8.0) -> np.ndarray:
    """Pixels per pLDDT band: saturated, not dark, hue within `tolerance_deg` of the band colour's hue.

    Shading (diffuse light, ambient occlusion, specular highlights) changes a surface colour's brightness and
    saturation but hardly its hue, and the four band hues are far apart (>= 20 degrees, the blues the
    closest); the white background, grey controls and dark outlines fall below the thresholds.
    """
    rgb = rgba[..., :3].reshape(-1, 3).astype(np.float64) / 255
    high, low = rgb.max(axis=1), rgb.min(axis=1)
    chroma = high - low
    keep = (high > 0.25) & (chroma / np.maximum(high, 1e-9) > 0.3)
    r, g, b = rgb[keep].T
    c = chroma[keep]
    top = high[keep]
    hue = np.where(top == r, ((g - b) / c) % 6, np.where(top == g, (b - r) / c + 2, (r - g) / c + 4)) * 60
    distance = np.abs((hue[:, None] - band_hues()[None, :] + 180) % 360 - 180)
    nearest = distance.argmin(axis=1)
    close = distance[np.arange(len(hue)), nearest] <= tolerance_deg
    return np.bincount(nearest[close], minlength=len(pages.PLDDT_BANDS))


def viewer_band_pixels(page, timeout_s: float = 15.0) -> np.ndarray:
    """Band pixel counts of a screenshot of the Mol* canvas, retried until the frame shows two bands."""
    canvas = page.locator("#viewer canvas").first
    deadline = time.monotonic() + timeout_s
    while True:
        png = base64.b64encode(canvas.screenshot()).decode()
        width, height, data = page.evaluate(DECODE_PNG_JS, png)
        rgba = np.frombuffer(base64.b64decode(data), np.uint8).reshape(height, width, 4)
        counts = band_pixel_counts(rgba)
        if (counts >= 200).sum() >= 2 or time.monotonic() > deadline:
            return counts
        time.sleep(0.5)


def test_band_pixel_counts_follow_hue_not_brightness():
    colours = {"#0053D6": 0, "#65CBF3": 1, "#FFDB13": 2, "#FF7D45": 3}
    pixels = []
    for colour in colours:
        rgb = np.array([int(colour[i : i + 2], 16) for i in (1, 3, 5)], np.float64)
        for shade in (0.45, 0.8, 1.0):  # darker under shading: same hue
            pixels.append(np.append(rgb * shade, 255))
        pixels.append(np.append(rgb + (255 - rgb) * 0.3, 255))  # towards white in a highlight
    pixels += [[255, 255, 255, 255], [128, 128, 128, 255], [20, 20, 20, 255], [230, 40, 40, 255], [40, 200, 40, 255]]
    counts = band_pixel_counts(np.array(pixels, np.uint8)[None])
    assert counts.tolist() == [4, 4, 4, 4]


@pytest.mark.network
def test_entry_page_shows_the_model_coloured_by_plddt_and_its_plots(session, viewer_files, server_url):
    page = session.page
    started = time.monotonic()
    page.goto(f"{server_url}/entry/P41068")
    assert page.title().startswith("P41068") and page.locator("#untrained-warning").is_visible()
    page.wait_for_function(
        "['loaded', 'failed'].includes(document.body.dataset.viewerState)", timeout=VIEWER_TIMEOUT_MS
    )
    state = page.evaluate("[document.body.dataset.viewerState, document.body.dataset.viewerMessage]")
    assert state == ["loaded", None], state
    themes = page.evaluate(THEMES_JS)
    assert themes and set(themes) == {"plddt-confidence"}, themes
    counts = viewer_band_pixels(page)
    assert (counts >= 200).sum() >= 2, f"pLDDT band pixels (very high, confident, low, very low): {counts}"

    page.wait_for_function("document.getElementById('pae').dataset.drawn === 'true'")
    assert page.evaluate("[document.getElementById('pae').width, document.getElementById('pae').height]") == [
        LENGTH,
        LENGTH,
    ]
    assert page.evaluate(PAE_MISMATCH_JS, "/files/SM-P41068-F1-predicted_aligned_error_v1.png") == 0
    page.wait_for_function("document.getElementById('plddt-plot').dataset.drawn === 'true'")
    bars = page.evaluate("[...document.querySelectorAll('#plddt-plot rect.bar')].map(b => b.getAttribute('fill'))")
    assert len(bars) == LENGTH and set(bars) == {colour for _, _, colour in pages.PLDDT_BANDS}
    assert time.monotonic() - started < 50


def test_search_box_leads_to_the_entry(session, server_url):
    page = session.page
    page.goto(f"{server_url}/")
    page.locator("main form.search input[name=q]").fill("ribose")
    page.locator("main form.search button").click()
    page.wait_for_url("**/?q=ribose")
    assert "1 result" in page.locator("#result-count").inner_text()
    page.get_by_role("link", name="P41068").click()
    page.wait_for_url("**/entry/P41068")
    assert page.locator("h1").inner_text().startswith("D-ribose pyranase")


def test_page_without_viewer_files_explains_and_keeps_plots(session, server_url, structome_server, monkeypatch):
    monkeypatch.setattr(structome_server, "viewer", ViewerAssets.missing("test: no viewer files"))  # a failed fetch
    page = session.page
    page.goto(f"{server_url}/entry/P41068")
    page.wait_for_function("document.body.dataset.viewerState === 'failed'")
    assert "not available" in page.locator("#viewer-message").inner_text()
    page.wait_for_function(
        "document.getElementById('pae').dataset.drawn === 'true' && "
        "document.getElementById('plddt-plot').dataset.drawn === 'true'"
    )
    assert page.evaluate("typeof window.PDBeMolstarPlugin") == "undefined"
    page.goto(f"{server_url}/entry/P2")  # markup in the description shows as text and runs nothing
    page.wait_for_function("document.getElementById('plddt-plot').dataset.drawn === 'true'")
    assert page.locator("h1").inner_text().startswith("<script>alert(1)</script> & co")


@pytest.mark.network
def test_fragments_switch_with_the_selector(session, viewer_files, server_url):
    """A deep link opens F2; choosing F1 while F2 is still loading ends with F1 in the viewer and the plots."""
    page = session.page
    page.goto(f"{server_url}/entry/P3#SM-P3-F2", wait_until="domcontentloaded")
    assert page.locator("#fragment").input_value() == "SM-P3-F2" and page.locator("section#SM-P3-F2").is_visible()
    page.locator("#fragment").select_option("SM-P3-F1")
    page.wait_for_url("**/entry/P3#SM-P3-F1")
    page.wait_for_function(
        f"document.body.dataset.viewerState === 'loaded' && {MODEL_JS} === 'SM-P3-F1'", timeout=VIEWER_TIMEOUT_MS
    )
    assert page.evaluate(f"[document.getElementById('pae').dataset.entryId, {MODEL_JS}]") == ["SM-P3-F1"] * 2
    assert page.locator("section#SM-P3-F1").is_visible() and not page.locator("section#SM-P3-F2").is_visible()
