"""Entry and search pages (escaping, embedded data), the static-file allow-list, and the pinned viewer assets:
cache, integrity, re-fetch of damaged files, the offline folder. No browser (see test_browser.py).

Network: at most one fetch per session. `verified_files` fills the session cache ($STRUCTOME_CACHE, set by
tests/conftest.py) through the real fetch unless the server fixture did it already; the other cache tests
get a registry stand-in that serves a tarball rebuilt from those verified files.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import tarfile
from html.parser import HTMLParser
from pathlib import Path

import pytest
from conftest import registry_problem, unavailable

from structome.jobs.serve import pages, viewer_assets
from structome.jobs.serve.viewer_assets import ViewerAssets

TRAP = {
    "entryId": "SM-P41068-F1",
    "uniprotAccession": "P41068",
    "uniprotId": "TRAP_ECOLI",
    "uniprotDescription": "D-ribose pyranase",
    "gene": "rbsD",
    "taxId": 83333,
    "organismScientificName": "Escherichia coli (strain K12)",
    "sequence": "MKV" * 10,
    "uniprotSequence": "MKV" * 10,
    "sequenceStart": 1,
    "sequenceEnd": 30,
    "sequenceChecksum": "0197355516942160",
    "globalMetricValue": 68.6,
    "fractionPlddtVeryLow": 0.3,
    "fractionPlddtLow": 0.1,
    "fractionPlddtConfident": 0.4,
    "fractionPlddtVeryHigh": 0.2,
    "latestVersion": 1,
    "allVersions": [1],
    "modelCreatedDate": "2026-11-25",
    "cifUrl": "/files/SM-P41068-F1-model_v1.cif",
    "paeDocUrl": "/files/SM-P41068-F1-predicted_aligned_error_v1.json",
    "paeImageUrl": "/files/SM-P41068-F1-predicted_aligned_error_v1.png",
    "plddtDocUrl": "/files/SM-P41068-F1-confidence_v1.json",
    "ptm": 0.81,
    "sequenceMd5": "cc" * 16,
    "model": "esmfold-tiny",
    "untrained": True,
}
HOSTILE = "<script>alert(1)</script></script><!-- & \"quoted\" 'single'"
NO_VIEWER = ViewerAssets.missing("not loaded in this test")


class Elements(HTMLParser):
    """Start tags (name, attributes) and the text of every <script> element."""

    def __init__(self, text: str):
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict]] = []
        self.scripts: list[tuple[dict, str]] = []
        self._script: dict | None = None
        self.feed(text)
        self.close()

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        if tag == "script":
            self._script = dict(attrs)
            self.scripts.append((self._script, ""))

    def handle_data(self, data):
        if self._script is not None:
            attrs, text = self.scripts[-1]
            self.scripts[-1] = (attrs, text + data)

    def handle_endtag(self, tag):
        if tag == "script":
            self._script = None


def page_data(text: str) -> dict:
    ((attrs, data),) = [(a, t) for a, t in Elements(text).scripts if a.get("id") == "page-data"]
    assert attrs["type"] == "application/json"
    return json.loads(data)


# --- pages


def test_entry_page_renders_markup_in_values_inert():
    hostile = {
        **TRAP,
        "uniprotDescription": HOSTILE,
        "gene": HOSTILE,
        "organismScientificName": HOSTILE,
        "model": HOSTILE,
        "cifUrl": '/files/x.cif" onmouseover="alert(1)',
    }
    text = pages.entry_page([hostile], "P41068", NO_VIEWER)
    elements = Elements(text)
    assert [a.get("src") or a.get("type") for a, _ in elements.scripts] == ["application/json", "/static/entry.js"]
    assert "<script>alert" not in text and "</script><!--" not in text and "&lt;script&gt;alert(1)" in text
    assert not any(name.startswith("on") for _, attrs in elements.tags for name in attrs)
    data = page_data(text)  # the embedded JSON survives the HTML parser intact
    assert data["entries"] == [{k: hostile[k] for k in pages.SCRIPT_FIELDS}] and data["viewer"] is False
    assert data["entries"][0]["cifUrl"] == hostile["cifUrl"] and data["accession"] == "P41068"


def test_entry_page_shows_metadata_untrained_warning_downloads_and_fragments():
    text = pages.entry_page([TRAP], "P41068", NO_VIEWER)
    assert 'id="untrained-warning"' in text and "UNTRAINED" in text
    for shown in (
        "TRAP_ECOLI",
        "rbsD",
        "Escherichia coli (strain K12)",
        "taxid 83333",
        "68.60",
        "0.81",
        "2026-11-25",
        "30 residues",
        "esmfold-tiny",
    ):
        assert shown in text, shown
    hrefs = {a["href"] for tag, a in Elements(text).tags if tag == "a" and "download" in a}
    assert hrefs == {TRAP[k] for k in ("cifUrl", "paeDocUrl", "plddtDocUrl", "paeImageUrl")}
    assert 'id="pae"' in text and 'id="plddt-plot"' in text and "#0053D6" in text and "#FF7D45" in text
    assert "untrained-warning" not in pages.entry_page([{**TRAP, "untrained": False}], "P41068", NO_VIEWER)
    second = {**TRAP, "entryId": "SM-P41068-F2", "sequenceStart": 14, "sequenceEnd": 30}
    text = pages.entry_page([TRAP, second], "P41068", NO_VIEWER)
    sections = [a for tag, a in Elements(text).tags if tag == "section" and "data-entry-id" in a]
    assert [(s["data-entry-id"], "hidden" in s) for s in sections] == [("SM-P41068-F1", False), ("SM-P41068-F2", True)]
    assert 'id="fragment"' in text and "F2: residues 14–30" in text
    text = pages.entry_page([TRAP, second], "SM-P41068-F2", NO_VIEWER)  # asked for by entryId: that fragment first
    sections = [a for tag, a in Elements(text).tags if tag == "section" and "data-entry-id" in a]
    assert [(s["data-entry-id"], "hidden" in s) for s in sections] == [("SM-P41068-F1", True), ("SM-P41068-F2", False)]
    assert page_data(text)["initial"] == "SM-P41068-F2" and '<span class="accession">P41068</span>' in text


def test_page_without_viewer_says_so_and_loads_no_plugin():
    text = pages.entry_page([TRAP], "P41068", NO_VIEWER)
    assert 'id="viewer-message"' in text and "not available" in text and "pdbe-molstar-plugin" not in text
    assert not any("//" in (a.get("src") or a.get("href") or "") for _, a in Elements(text).tags)  # all local


def test_search_page_escapes_the_query_and_links_results():
    text = pages.search_page(HOSTILE, [{**TRAP, "uniprotDescription": HOSTILE}], 3)
    assert "<script>alert" not in text and not Elements(text).scripts
    ((_, box),) = [(t, a) for t, a in Elements(text).tags if t == "input" and a.get("name") == "q" and "value" in a]
    assert box["value"] == HOSTILE
    assert '<a href="/entry/P41068">' in text and "3 results" in text and "showing the first 1" in text
    odd = pages.search_page("x", [{**TRAP, "uniprotAccession": 'A/B?c#"d'}], 1)
    assert '<a href="/entry/A%2FB%3Fc%23%22d">' in odd
    assert "result-count" in pages.search_page("", [], 0)


# --- static files


@pytest.mark.parametrize("name", ["entry.js", "style.css"])
def test_static_serves_our_web_files(name):
    data, media_type = pages.static_asset(name, NO_VIEWER)
    assert data and media_type.startswith("text/")


@pytest.mark.parametrize(
    "name",
    [
        "",
        ".",
        "..",
        "../server.py",
        "..%2Fserver.py",
        "web/entry.js",
        "/etc/passwd",
        "entry.js/../pages.py",
        "ENTRY.JS",
        "entry.js ",
        "__init__.py",
        "pages.py",
        "pdbe-molstar-plugin.js",
        "SHA256SUMS",
        viewer_assets.PLUGIN_JS,
        viewer_assets.PLUGIN_CSS,  # not loaded (NO_VIEWER)
    ],
)
def test_static_refuses_unknown_and_path_like_names(name):
    assert pages.static_asset(name, NO_VIEWER) is None


# --- viewer assets


def tarball_of(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, data in {
            "package/package.json": b"{}",
            **{f"package/build/{n}": d for n, d in files.items()},
        }.items():
            member = tarfile.TarInfo(name)
            member.size = len(data)
            archive.addfile(member, io.BytesIO(data))
    return buffer.getvalue()


def integrity_of(data: bytes) -> str:
    return "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode()


@pytest.fixture(scope="session")
def verified_files() -> dict[str, bytes]:
    """The two pinned files, verified; fetched (the session's one fetch) only if the session cache lacks them."""
    try:
        return viewer_assets.read_verified(viewer_assets.default_folder())
    except viewer_assets.ViewerAssetError:
        pass
    try:
        _, files = viewer_assets.load_viewer_assets()
    except viewer_assets.ViewerAssetError as error:
        unavailable(f"pdbe-molstar {viewer_assets.VERSION} could not be fetched from the npm registry: {error}")
    return files


class Registry:
    """Stands in for the npm registry: serves `tarball` and counts downloads."""

    def __init__(self, tarball: bytes):
        self.tarball, self.downloads = tarball, 0

    def __call__(self, url: str) -> bytes:
        assert url == viewer_assets.tarball_url()
        self.downloads += 1
        return self.tarball


@pytest.fixture
def registry(verified_files, monkeypatch, tmp_path):
    """A private cache folder and a registry serving a tarball of the verified files (integrity pinned to it)."""
    monkeypatch.setenv("STRUCTOME_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("STRUCTOME_VIEWER_ASSETS", raising=False)
    stand_in = Registry(tarball_of(verified_files))
    monkeypatch.setattr(viewer_assets, "download", stand_in)
    monkeypatch.setattr(viewer_assets, "TARBALL_INTEGRITY", integrity_of(stand_in.tarball))
    return stand_in


@pytest.mark.network
def test_fetched_files_are_cached_recorded_served_and_linked(registry, verified_files):
    viewer = ViewerAssets.load()
    folder = viewer.folder
    assert folder == viewer_assets.default_folder() and registry.downloads == 1
    assert sorted(p.name for p in folder.iterdir()) == sorted([*viewer_assets.FILE_SHA256, viewer_assets.RECORD])
    record = dict(reversed(line.split("  ")) for line in (folder / viewer_assets.RECORD).read_text().splitlines())
    assert record == viewer_assets.FILE_SHA256
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".")]  # no staging folder left behind
    script, media_type = pages.static_asset(viewer_assets.PLUGIN_JS, viewer)
    assert script == verified_files["pdbe-molstar-plugin.js"] and media_type.startswith("text/javascript")
    assert pages.static_asset(viewer_assets.PLUGIN_CSS, viewer)[1].startswith("text/css")
    text = pages.entry_page([TRAP], "P41068", viewer)
    assert f'src="/static/{viewer_assets.PLUGIN_JS}"' in text and "viewer-message" not in text
    assert ViewerAssets.load().folder == folder and registry.downloads == 1  # the cache is used


@pytest.mark.network
def test_damaged_cache_file_is_detected_and_fetched_again(registry, verified_files):
    folder = ViewerAssets.load().folder
    damaged = bytearray(verified_files["pdbe-molstar-plugin.js"])
    damaged[1000] ^= 1
    (folder / "pdbe-molstar-plugin.js").write_bytes(bytes(damaged))
    (folder / "pdbe-molstar-light.css").unlink()
    assert ViewerAssets.load().folder == folder and registry.downloads == 2
    assert viewer_assets.read_verified(folder) == verified_files


@pytest.mark.network
def test_unwritable_cache_still_serves_the_verified_files(registry, verified_files, tmp_path, monkeypatch, caplog):
    (tmp_path / "not-a-folder").write_text("")
    monkeypatch.setenv("STRUCTOME_CACHE", str(tmp_path / "not-a-folder"))
    with caplog.at_level("WARNING", logger="structome.jobs.serve.viewer_assets"):
        viewer = ViewerAssets.load()
    assert viewer.folder == viewer_assets.default_folder()
    assert "from memory" in caplog.text and viewer.available
    assert pages.static_asset(viewer_assets.PLUGIN_CSS, viewer)[0] == verified_files["pdbe-molstar-light.css"]


@pytest.mark.network
def test_tarball_failing_its_integrity_is_refused(registry):
    registry.tarball = registry.tarball[:-1] + bytes([registry.tarball[-1] ^ 1])
    viewer = ViewerAssets.load()
    assert viewer.folder is None
    assert "integrity" in viewer.problem and not viewer_assets.default_folder().exists()
    assert pages.static_asset(viewer_assets.PLUGIN_JS, viewer) is None
    assert "viewer-message" in pages.entry_page([TRAP], "P41068", viewer)


@pytest.mark.network
def test_tarball_with_files_other_than_the_pinned_is_refused(registry, verified_files, monkeypatch):
    tampered = tarball_of({**verified_files, "pdbe-molstar-plugin.js": b"alert(1)"})
    registry.tarball = tampered  # even when its integrity matches (a wrong pin), the file pins catch it
    monkeypatch.setattr(viewer_assets, "TARBALL_INTEGRITY", integrity_of(tampered))
    viewer = ViewerAssets.load()
    assert viewer.folder is None and "pinned sha256" in viewer.problem
    assert not viewer_assets.default_folder().exists()


def test_unreachable_registry_leaves_pages_working(monkeypatch, tmp_path, caplog):
    monkeypatch.setenv("STRUCTOME_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("NPM_CONFIG_REGISTRY", "http://127.0.0.1:9/npm/")  # discard port: refused at once
    monkeypatch.delenv("STRUCTOME_VIEWER_ASSETS", raising=False)
    assert (
        viewer_assets.tarball_url() == f"http://127.0.0.1:9/npm/pdbe-molstar/-/pdbe-molstar-{viewer_assets.VERSION}.tgz"
    )
    with caplog.at_level("WARNING", logger="structome.jobs.serve.viewer_assets"):
        viewer = ViewerAssets.load()
    assert viewer.folder is None
    assert "cannot fetch http://127.0.0.1:9/npm/" in viewer.problem
    assert "no 3D viewer" in caplog.text and "--viewer-assets" in caplog.text
    text = pages.entry_page([TRAP], "P41068", viewer)
    assert "viewer-message" in text and 'id="pae"' in text and "SM-P41068-F1-model_v1.cif" in text


@pytest.mark.network
def test_offline_folder_is_checked_and_never_fetched(registry, verified_files, tmp_path, monkeypatch):
    offline = tmp_path / "offline"
    offline.mkdir()
    for name, data in verified_files.items():
        (offline / name).write_bytes(data)
    assert ViewerAssets.load(offline).folder == offline
    monkeypatch.setenv("STRUCTOME_VIEWER_ASSETS", str(offline))
    viewer = ViewerAssets.load()
    assert viewer.folder == offline and viewer.available
    (offline / "pdbe-molstar-light.css").write_bytes(b"body{}")
    viewer = ViewerAssets.load()
    assert viewer.folder is None and "pdbe-molstar-light.css: sha256" in viewer.problem
    assert pages.static_asset(viewer_assets.PLUGIN_JS, viewer) is None  # nothing of a failed folder is served
    (offline / "pdbe-molstar-light.css").unlink()
    viewer = ViewerAssets.load(offline)
    assert viewer.folder is None and "cannot read" in viewer.problem
    assert registry.downloads == 0 and not viewer_assets.default_folder().exists()


def test_pins_are_consistent():
    assert viewer_assets.TARBALL_INTEGRITY.startswith("sha512-") and len(viewer_assets.FILE_SHA256) == 2
    assert set(viewer_assets.SERVED_NAMES.values()) == set(viewer_assets.FILE_SHA256)
    assert all(viewer_assets.VERSION in name for name in viewer_assets.SERVED_NAMES)
    with pytest.raises(viewer_assets.ViewerAssetError):
        viewer_assets.check_integrity(b"x")


def test_viewer_assets_hold_their_files_or_a_problem_and_cannot_be_changed():
    files = {name: name.encode() for name in viewer_assets.FILE_SHA256}
    viewer = ViewerAssets(files, Path("/assets"))
    assert viewer.available and viewer.problem is None
    assert viewer.served_file(viewer_assets.PLUGIN_CSS) == b"pdbe-molstar-light.css"
    assert viewer.served_file("pdbe-molstar-light.css") is None  # only by its versioned /static/ name
    with pytest.raises(TypeError):
        viewer.files["pdbe-molstar-plugin.js"] = b"alert(1)"
    files["pdbe-molstar-plugin.js"] = b"alert(1)"  # the caller's dict is copied
    assert viewer.served_file(viewer_assets.PLUGIN_JS) == b"pdbe-molstar-plugin.js"
    missing = ViewerAssets.missing("no files")
    assert not missing.available and missing.served_file(viewer_assets.PLUGIN_JS) is None
    for neither_or_both in ({}, {"files": files, "problem": "no files"}):
        with pytest.raises(ValueError):
            ViewerAssets(**neither_or_both)


def test_an_unreachable_registry_is_reported_quickly():
    problem = registry_problem("http://127.0.0.1:9/npm/")  # discard port: refused at once
    assert problem is not None and "127.0.0.1:9" in problem


def test_search_page_labels_a_capped_count_and_a_stopped_scan():
    lean = {k: TRAP[k] for k in ("uniprotAccession", "entryId", "gene", "globalMetricValue")}
    text = pages.search_page("coli", [{**lean, "sequenceLength": 1234}], 1001, counted_all=False)
    assert "more than 1001 results" in text and '<td class="num">1234</td>' in text and "stopped" not in text
    stopped = pages.search_page("kinase", [], 0, counted_all=False, scanned_all=False)
    assert (
        "0 results" in stopped
        and "more than" not in stopped
        and "stopped early" in stopped
        and "accession and entry-id" in stopped
    )
    assert "stopped" not in pages.search_page("kinase", [], 0)
