"""HTML of `structome serve`: the entry page (AlphaFold-DB-like) and the search page, and their static files.

Pure functions over the entry dicts of `/api/prediction/{accession}` (AlphaFold DB API shape). Every value
goes through `html.escape`; data for the page scripts travels in a `<script type="application/json">` with
`<`, `>` and `&` escaped. Everything a page loads comes from this server: jobs/serve/web/ and the pinned
pdbe-molstar build the server loaded (a `ViewerAssets`, passed in; no CDN, no web fonts).
"""

from __future__ import annotations

import functools
import html
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from string import Template
from typing import Any
from urllib.parse import quote

from structome.jobs.serve.viewer_assets import PLUGIN_CSS, PLUGIN_JS, VERSION, ViewerAssets
from structome.storage import plddt

# AlphaFold DB pLDDT bands (storage.plddt), highest first as the legend lists them: (lower bound, label, colour).
PLDDT_BANDS = tuple((band.lower, band.label, band.colour) for band in reversed(plddt.PLDDT_BANDS))
# Our own files under /static/ (fixed names; never a path built from a request) -> media type.
WEB_FILES = {
    "entry.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
}
VIEWER_MEDIA_TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8"}
MISSING = "—"
# What entry.js needs of each fragment (not the sequences: a 35,000-residue protein has ~170 fragments).
SCRIPT_FIELDS = ("entryId", "cifUrl", "paeDocUrl", "plddtDocUrl", "sequenceStart", "sequenceEnd")
HEADER_SEARCH = """<form class="search small" action="/" method="get" role="search">
<input type="search" name="q" aria-label="Search" placeholder="Accession, gene, organism, description">
<button type="submit">Search</button></form>"""

PAGE = Template("""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>$title</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="/static/style.css">
$head</head>
<body>
<header class="site"><a class="home" href="/">structome</a>
$header_search</header>
<main>
$body</main>
</body>
</html>
""")

ENTRY = Template("""<h1>$heading <span class="accession">$accession</span></h1>
$banner$selector$fragments
<section class="structure">
<h2>3D viewer</h2>
$viewer
<ul class="legend plddt-legend" aria-label="Model confidence">$legend</ul>
</section>
<section class="plots">
<figure class="pae-figure">
<figcaption>Predicted aligned error (PAE)</figcaption>
<div class="pae-grid">
<div class="axis-title y">Aligned residue</div>
<div class="pae-plot"><canvas id="pae" width="1" height="1" aria-label="PAE heatmap"></canvas>
<div class="ticks y" id="pae-ticks-y"></div><div class="ticks x" id="pae-ticks-x"></div></div>
<div class="axis-title x">Scored residue</div>
</div>
<div class="colour-scale"><div class="bar" id="pae-scale"></div><div class="ticks" id="pae-scale-ticks"></div>
<div class="axis-title">Expected position error (Ångströms)</div></div>
<p class="status" id="pae-status">Loading PAE…</p>
</figure>
<figure class="plddt-figure">
<figcaption>Predicted local distance difference test (pLDDT) per residue</figcaption>
<svg id="plddt-plot" viewBox="0 0 800 260" role="img" aria-label="pLDDT per residue"></svg>
<p class="status" id="plddt-status">Loading pLDDT…</p>
</figure>
</section>
<script type="application/json" id="page-data">$data</script>
<script src="/static/entry.js" defer></script>
""")

FRAGMENT = Template("""<section class="fragment" id="$anchor" data-entry-id="$entry_id"$hidden>
<h2>$entry_id</h2>
<table class="metadata">
$rows
</table>
<details class="sequence"><summary>Modelled sequence ($length residues)</summary><pre>$sequence</pre></details>
<h3>Downloads</h3>
<ul class="downloads">$downloads</ul>
</section>
""")

SEARCH = Template("""<h1>Search structures</h1>
<form class="search big" action="/" method="get" role="search">
<input type="search" name="q" value="$query" aria-label="Search" autofocus
 placeholder="UniProt accession, gene, organism or description">
<button type="submit">Search</button></form>
<p class="count" id="result-count">$count</p>
$table""")


def esc(value: Any) -> str:
    """Escaped text of a value (None and empty strings show as a dash)."""
    return MISSING if value is None or value == "" else html.escape(str(value), quote=True)


def json_for_script(value: Any) -> str:
    """JSON that cannot end its <script> element or open a comment in it: <, > and & as \\u escapes."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def plddt_band(value: float) -> tuple[str, str]:
    """(label, colour) of the AFDB band of a pLDDT value."""
    band = plddt.band_of(value)
    return band.label, band.colour


def number(value: Any, digits: int) -> str:
    return f"{value:.{digits}f}" if isinstance(value, (int, float)) and not isinstance(value, bool) else esc(value)


def model_length(entry: Mapping[str, Any]) -> int | None:
    """Residues in the model (the fragment): sequenceEnd - sequenceStart + 1, else len(sequence)."""
    start, end = entry.get("sequenceStart"), entry.get("sequenceEnd")
    if isinstance(start, int) and isinstance(end, int):
        return end - start + 1
    return len(entry["sequence"]) if entry.get("sequence") else None


def full_length(entry: Mapping[str, Any]) -> int | None:
    """Length of the whole UniProt sequence: a search result's sequenceLength, else len(uniprotSequence)
    (`sequence` is the modelled part)."""
    if isinstance(entry.get("sequenceLength"), int):
        return entry["sequenceLength"]
    sequence = entry.get("uniprotSequence") or entry.get("sequence")
    return len(sequence) if sequence else None


def fragment_label(entry: Mapping[str, Any]) -> str:
    entry_id = str(entry.get("entryId") or "")
    fragment = entry_id.rsplit("-", 1)[-1] if "-F" in entry_id else entry_id
    return f"{fragment}: residues {entry.get('sequenceStart')}–{entry.get('sequenceEnd')}"


def row(label: str, value_html: str) -> str:
    return f'<tr><th scope="row">{html.escape(label)}</th><td>{value_html}</td></tr>'


def metadata_rows(entry: Mapping[str, Any]) -> str:
    mean = entry.get("globalMetricValue")
    confidence = number(mean, 2)
    if isinstance(mean, (int, float)):
        label, colour = plddt_band(mean)
        confidence = (
            f'<span class="chip" style="background:{colour}"></span>{confidence} '
            f'<span class="band">{html.escape(label.split(" (")[0])}</span>'
        )
    organism = esc(entry.get("organismScientificName"))
    if entry.get("taxId") is not None:
        organism += f' <span class="taxid">(taxid {esc(entry.get("taxId"))})</span>'
    model = esc(entry.get("model"))
    if entry.get("untrained"):
        model += ' <strong class="untrained-tag">untrained weights</strong>'
    length, full = model_length(entry), full_length(entry)
    rows = [
        row("UniProt accession", esc(entry.get("uniprotAccession"))),
        row("Entry name", esc(entry.get("uniprotId"))),
        row("Description", esc(entry.get("uniprotDescription"))),
        row("Gene", esc(entry.get("gene"))),
        row("Organism", organism),
        row("Sequence length", f"{full} residues" if full is not None else MISSING),
        row(
            "Residues modelled",
            f"{esc(entry.get('sequenceStart'))}–{esc(entry.get('sequenceEnd'))}"
            + (f" ({length} residues)" if length is not None else ""),
        ),
        row("Model", model),
        row("Mean pLDDT", confidence),
        row("pTM", number(entry.get("ptm"), 2)),
        row("Created", esc(entry.get("modelCreatedDate"))),
        row("Version", esc(entry.get("latestVersion"))),
        row("Sequence checksum (CRC64)", f"<code>{esc(entry.get('sequenceChecksum'))}</code>"),
    ]
    return "\n".join(rows)


def download_links(entry: Mapping[str, Any]) -> str:
    links = []
    for key, label in (
        ("cifUrl", "mmCIF model"),
        ("pdbUrl", "PDB model"),
        ("paeDocUrl", "PAE (JSON)"),
        ("plddtDocUrl", "Confidence (JSON)"),
        ("paeImageUrl", "PAE image (PNG)"),
    ):
        url = entry.get(key)
        if url:
            name = str(url).rpartition("/files/")[2]  # an accession may hold a `/`
            links.append(
                f'<li><a href="{esc(quote(str(url), safe="/:"))}" download="{esc(name)}">{html.escape(label)}</a> '
                f'<span class="file">{esc(name)}</span></li>'
            )
    return "".join(links)


def fragment_section(entry: Mapping[str, Any], shown: bool) -> str:
    sequence = str(entry.get("sequence") or "")
    wrapped = "\n".join(sequence[i : i + 60] for i in range(0, len(sequence), 60))
    return FRAGMENT.substitute(
        anchor=esc(entry.get("entryId")),
        entry_id=esc(entry.get("entryId")),
        hidden="" if shown else " hidden",
        rows=metadata_rows(entry),
        length=len(sequence),
        sequence=html.escape(wrapped),
        downloads=download_links(entry),
    )


def fragment_selector(entries: Sequence[Mapping[str, Any]]) -> str:
    if len(entries) < 2:
        return ""
    options = "".join(f'<option value="{esc(e.get("entryId"))}">{esc(fragment_label(e))}</option>' for e in entries)
    return (
        f'<p class="fragments"><label for="fragment">This protein is modelled in {len(entries)} '
        f'overlapping fragments: </label><select id="fragment">{options}</select></p>\n'
    )


def untrained_banner(entries: Sequence[Mapping[str, Any]]) -> str:
    if not any(e.get("untrained") for e in entries):
        return ""
    return (
        '<div class="banner untrained" id="untrained-warning" role="alert"><strong>UNTRAINED MODEL.</strong> '
        "These structures come from a predictor with random (untrained) weights. They are not predictions "
        "of the real structure: use them only to test the software.</div>\n"
    )


def viewer_block(viewer: ViewerAssets) -> str:
    if viewer.available:
        return '<div id="viewer" class="viewer"></div>'
    return (
        '<div id="viewer" class="viewer unavailable"><p class="viewer-message" id="viewer-message">'
        f"The 3D viewer is not available on this server: the pinned pdbe-molstar {VERSION} "
        "files could not be fetched or verified (the server log says why). Metadata, plots and downloads "
        "work without it.</p></div>"
    )


def legend() -> str:
    return "".join(
        f'<li><span class="chip" style="background:{colour}"></span>{html.escape(label)}</li>'
        for _, label, colour in PLDDT_BANDS
    )


def page(title: str, body: str, head: str = "", header_search: bool = True) -> str:
    return PAGE.substitute(
        title=html.escape(title), head=head, body=body, header_search=HEADER_SEARCH if header_search else ""
    )


def entry_page(entries: list[dict], accession: str, viewer: ViewerAssets) -> str:
    """The page of one UniProt accession; `entries` are its fragments (F1, F2, ...) as the API returns them.

    `accession` as requested: a UniProt accession, or an entryId, whose fragment is then shown first. The page
    links the viewer files when `viewer` has them, else it says where the viewer would be that it is missing.
    """
    first, requested = entries[0], accession
    accession = first.get("uniprotAccession") or accession
    initial = next((e for e in entries if e.get("entryId") == requested), first)
    heading = first.get("uniprotDescription") or first.get("uniprotId") or accession
    head = ""
    if viewer.available:
        head = (
            f'<link rel="stylesheet" href="/static/{PLUGIN_CSS}">\n<script src="/static/{PLUGIN_JS}" defer></script>\n'
        )
    data = {
        "accession": accession,
        "entries": [{k: e.get(k) for k in SCRIPT_FIELDS} for e in entries],
        "initial": initial.get("entryId"),
        "viewer": viewer.available,
        "bands": [
            {"min": lower if lower > float("-inf") else None, "label": label, "colour": colour}
            for lower, label, colour in PLDDT_BANDS
        ],
    }
    body = ENTRY.substitute(
        heading=esc(heading),
        accession=esc(accession),
        banner=untrained_banner(entries),
        selector=fragment_selector(entries),
        fragments="".join(fragment_section(e, e is initial) for e in entries),
        viewer=viewer_block(viewer),
        legend=legend(),
        data=json_for_script(data),
    )
    return page(f"{accession} · {heading} · structome", body, head)


def result_row(entry: Mapping[str, Any]) -> str:
    accession = entry.get("uniprotAccession")
    mean = entry.get("globalMetricValue")
    chip = ""
    if isinstance(mean, (int, float)):
        chip = f'<span class="chip" style="background:{plddt_band(mean)[1]}"></span>'
    untrained = ' <span class="untrained-tag">untrained</span>' if entry.get("untrained") else ""
    href = esc(f"/entry/{quote(str(accession), safe='')}")
    return (
        f'<tr><td><a href="{href}">{esc(accession)}</a></td><td>{esc(entry.get("entryId"))}</td>'
        f"<td>{esc(entry.get('uniprotDescription'))}</td><td>{esc(entry.get('gene'))}</td>"
        f'<td>{esc(entry.get("organismScientificName"))}</td><td class="num">{esc(full_length(entry))}</td>'
        f'<td class="num">{chip}{number(mean, 1)}{untrained}</td></tr>'
    )


def search_page(
    query: str, results: list[dict], total: int, *, counted_all: bool = True, scanned_all: bool = True
) -> str:
    """The home page (`query` empty) and search results; `total` counts the matches (a lower bound unless
    `counted_all`), `results` the ones shown; `scanned_all` False: the substring search stopped early."""
    if query:
        more = "more than " if scanned_all and not counted_all else ""  # a stopped scan says so below
        count = f"{more}{total} result{'' if total == 1 and not more else 's'} for “{html.escape(query)}”"
        if len(results) < total:
            count += f" (showing the first {len(results)})"
        if not scanned_all:
            count += (
                ". The search of names, genes, organisms and descriptions stopped early on this large database:"
                " accession and entry-id matches are complete; try an accession or a longer word"
            )
    else:
        count = "Search by UniProt accession, entry name, gene, organism or protein description."
    table = ""
    if results:
        table = (
            '<table class="results"><thead><tr><th>Accession</th><th>Entry</th><th>Description</th>'
            "<th>Gene</th><th>Organism</th><th>Length</th><th>Mean pLDDT</th></tr></thead><tbody>\n"
            + "\n".join(result_row(e) for e in results)
            + "\n</tbody></table>\n"
        )
    body = SEARCH.substitute(query=html.escape(query, quote=True), count=count, table=table)
    return page(f"{query} · structome" if query else "structome", body, header_search=False)


WEB = Path(__file__).with_name("web")  # beside this module (package data in the wheel)


@functools.cache
def web_file(name: str) -> bytes:
    """One of WEB_FILES (callers pass only its keys), read once."""
    return (WEB / name).read_bytes()


def static_asset(name: str, viewer: ViewerAssets) -> tuple[bytes, str] | None:
    """(bytes, media type) of a known static file (ours, or `viewer`'s), else None; `name` is only ever a key."""
    if name in WEB_FILES:
        return web_file(name), WEB_FILES[name]
    data = viewer.served_file(name)
    if data is None:
        return None
    return data, VIEWER_MEDIA_TYPES["." + name.rsplit(".", 1)[-1]]
