"""`structome serve` over a real socket: the AFDB API, file downloads (gzip, ranges, HEAD, ETag), hostile paths,
the SQL endpoint, export and pages. Requests go through http.client so that paths are sent exactly as written."""

from __future__ import annotations

import gzip
import http.client
import io
import json
import struct
import tarfile
import threading
from pathlib import Path
from urllib.parse import quote, urlsplit

import pytest

from structome.storage import catalog
from structome.storage.reader import read_entry_file

CIF = "SM-P41068-F1-model_v1.cif"


def request(url: str, path: str, method: str = "GET", headers: dict | None = None, body: bytes | None = None):
    """(status, headers (lower-case names), body bytes) of one request on a fresh connection."""
    connection = http.client.HTTPConnection(urlsplit(url).netloc, timeout=30)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        connection.close()


def resident_mib() -> float:
    """This process's resident memory now (VmRSS), not its lifetime peak, which earlier tests have raised."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024  # kB
    raise LookupError("no VmRSS in /proc/self/status")


def get_json(url: str, path: str, **kwargs):
    status, headers, body = request(url, path, **kwargs)
    assert headers["content-type"].startswith("application/json"), (path, status, body[:200])
    return status, json.loads(body)


@pytest.fixture(scope="module")
def stored(served_database):
    """The decoded mmCIF and its files row."""
    row = catalog.query(served_database, "SELECT * FROM files WHERE fileName = ?", [CIF]).to_pylist()[0]
    return read_entry_file(served_database, "SM-P41068-F1").data, row


def test_prediction_api_answers_like_alphafold_db(server_url):
    status, entries = get_json(server_url, "/api/prediction/P41068")
    assert status == 200 and len(entries) == 1
    trap = entries[0]
    assert trap["entryId"] == "SM-P41068-F1" and trap["uniprotAccession"] == "P41068"
    assert trap["gene"] == "rbsD" and trap["taxId"] == 83333 and trap["uniprotId"] == "TRAP_ECOLI"
    assert len(trap["sequence"]) == 196 and (trap["sequenceStart"], trap["sequenceEnd"]) == (1, 196)
    assert trap["cifUrl"] == f"{server_url}/files/{CIF}" and trap["latestVersion"] == 1 and trap["allVersions"] == [1]
    assert trap["paeImageUrl"].endswith("-predicted_aligned_error_v1.png")
    assert trap["plddtDocUrl"].endswith("-confidence_v1.json") and trap["modelCreatedDate"] == "2026-11-25"
    bands = [
        trap[c] for c in ("fractionPlddtVeryLow", "fractionPlddtLow", "fractionPlddtConfident", "fractionPlddtVeryHigh")
    ]
    assert all(b > 0 for b in bands) and sum(bands) == pytest.approx(1.0, abs=0.01)
    assert 0 < trap["globalMetricValue"] < 100 and trap["ptm"] == pytest.approx(0.81) and trap["untrained"]
    assert {"sequenceChecksum", "sequenceMd5", "model", "uniprotDescription", "organismScientificName"} <= set(trap)


def test_prediction_api_lists_fragments_and_answers_entry_ids_and_unknowns(server_url):
    status, fragments = get_json(server_url, "/api/prediction/P3")
    assert status == 200 and [e["entryId"] for e in fragments] == ["SM-P3-F1", "SM-P3-F2"]
    assert [(e["sequenceStart"], e["sequenceEnd"]) for e in fragments] == [(1, 20), (14, 33)]
    assert get_json(server_url, "/api/prediction/SM-P3-F2")[1] == fragments
    assert get_json(server_url, "/api/prediction/P1")[1][0]["uniprotDescription"] == 'see ": "/files/x'
    status, error = get_json(server_url, "/api/prediction/Q99999")
    assert status == 404 and "Q99999" in error["error"]


def test_download_is_sent_as_stored_gzip_when_accepted(server_url, stored):
    text, row = stored
    status, headers, body = request(server_url, f"/files/{CIF}", headers={"Accept-Encoding": "gzip, deflate"})
    assert status == 200 and headers["content-encoding"] == "gzip" and headers["etag"] == f'"{row["sha256"]}"'
    assert len(body) == row["length"] and gzip.decompress(body) == text
    assert headers["content-type"].startswith("chemical/x-mmcif") and "accept-encoding" in headers["vary"].lower()


@pytest.mark.parametrize("accept", [None, "identity", "gzip;q=0, identity", "br"])
def test_download_is_decoded_for_clients_without_gzip(server_url, stored, accept):
    text, row = stored
    status, headers, body = request(server_url, f"/files/{CIF}", headers={"Accept-Encoding": accept} if accept else {})
    assert status == 200 and "content-encoding" not in headers and body == text
    assert int(headers["content-length"]) == row["size"] and headers["etag"] != f'"{row["sha256"]}"'


@pytest.mark.parametrize(
    "header, expected",
    [
        ("bytes=0-99", slice(0, 100)),
        ("bytes=100-", slice(100, None)),
        ("bytes=-50", slice(-50, None)),
        ("bytes=5-5", slice(5, 6)),
        ("bytes=1000-999999999", slice(1000, None)),
    ],
)
def test_range_requests_get_206_with_the_right_bytes(server_url, stored, header, expected):
    text, _ = stored
    status, headers, body = request(server_url, f"/files/{CIF}", headers={"Range": header, "Accept-Encoding": "gzip"})
    part = text[expected]
    assert status == 206 and body == part and "content-encoding" not in headers
    first = text.index(part) if expected.start is None or expected.start >= 0 else len(text) + expected.start
    assert headers["content-range"] == f"bytes {first}-{first + len(part) - 1}/{len(text)}"


def test_unsatisfiable_and_ignored_ranges(server_url, stored):
    text, _ = stored
    status, headers, _ = request(server_url, f"/files/{CIF}", headers={"Range": f"bytes={len(text)}-"})
    assert status == 416 and headers["content-range"] == f"bytes */{len(text)}"
    for ignored in ("bytes=50-10", "bytes=0-1,5-9", "items=0-5"):
        status, _, body = request(server_url, f"/files/{CIF}", headers={"Range": ignored})
        assert status == 200 and body == text, ignored
    stale = request(server_url, f"/files/{CIF}", headers={"Range": "bytes=0-9", "If-Range": '"old"'})
    assert stale[0] == 200 and stale[2] == text


def test_head_and_conditional_requests(server_url, stored):
    text, row = stored
    status, headers, body = request(server_url, f"/files/{CIF}", method="HEAD")
    assert status == 200 and body == b"" and int(headers["content-length"]) == len(text)
    status, gz_headers, body = request(server_url, f"/files/{CIF}", method="HEAD", headers={"Accept-Encoding": "gzip"})
    assert status == 200 and body == b"" and int(gz_headers["content-length"]) == row["length"]
    status, _, body = request(server_url, f"/files/{CIF}", headers={"If-None-Match": headers["etag"]})
    assert status == 304 and body == b""
    assert request(server_url, f"/files/{CIF}", headers={"If-None-Match": '"other"'})[0] == 200


def test_json_files_and_the_pae_image(server_url):
    _, entries = get_json(server_url, "/api/prediction/P41068")
    status, pae = get_json(server_url, urlsplit(entries[0]["paeDocUrl"]).path)
    assert status == 200 and len(pae[0]["predicted_aligned_error"]) == 196  # absolute URLs, used as they are
    status, confidence = get_json(server_url, urlsplit(entries[0]["plddtDocUrl"]).path)
    assert status == 200 and set(confidence["confidenceCategory"]) == {"D", "L", "M", "H"}
    png_path = urlsplit(entries[0]["paeImageUrl"]).path
    status, headers, png = request(server_url, png_path, headers={"Accept-Encoding": "gzip"})
    assert status == 200 and headers["content-type"] == "image/png" and png[:8] == b"\x89PNG\r\n\x1a\n"
    assert struct.unpack(">II", png[16:24]) == (196, 196)
    status, headers, head = request(server_url, png_path, method="HEAD")
    assert status == 200 and int(headers["content-length"]) == len(png)


def test_the_pdb_format_model_is_rendered_from_the_mmcif(server_url, stored):
    import gemmi

    _, entries = get_json(server_url, "/api/prediction/P41068")
    assert entries[0]["pdbUrl"].endswith("/files/SM-P41068-F1-model_v1.pdb")
    status, headers, pdb = request(server_url, urlsplit(entries[0]["pdbUrl"]).path)
    assert status == 200 and headers["content-type"].startswith("chemical/x-pdb")
    assert b"UNTRAINED RANDOM WEIGHTS" in pdb.split(b"\nSEQRES")[0]  # provenance in TITLE
    from_pdb = gemmi.read_pdb_string(pdb.decode())[0]["A"]
    from_cif = gemmi.make_structure_from_block(gemmi.cif.read_string(stored[0].decode()).sole_block())[0]["A"]
    assert len(from_pdb) == len(from_cif) == 196
    assert [a.pos.tolist() for a in from_pdb[10]] == [a.pos.tolist() for a in from_cif[10]]
    assert [r[0].b_iso for r in from_pdb] == pytest.approx([r[0].b_iso for r in from_cif], abs=0.01)
    assert request(server_url, "/files/SM-P41068-F1-model_v1.pdb", headers={"Range": "bytes=0-5"})[2] == b"HEADER"


HOSTILE_PATHS = [
    "/files/../../../../etc/passwd",
    "/files/..%2F..%2F..%2F..%2Fetc%2Fpasswd",
    "/files/%2e%2e%2f%2e%2e%2fetc%2fpasswd",
    "/files/%252e%252e%252f%252e%252e%252fetc%252fpasswd",
    "/files/%2Fetc%2Fpasswd",
    "/files//etc/passwd",
    "/files/..\\..\\etc\\passwd",
    f"/files/{CIF}%00.png",
    f"/files/{CIF}%00",
    "/files/catalog.duckdb",
    "/files/schema%2Fentries.parquet",
    "/files/",
    "/files/.",
    "/files/%2e%2e",
    f"/files/./{CIF}",
    f"/files/{CIF}/",
    "/static/..%2F..%2Fjobs%2Fserver.py",
    "/static/%2e%2e%2fserver.py",
    "/static/",
    "/entry/..%2F..%2Fetc%2Fpasswd",
    "/api/prediction/..%2F..%2Fetc%2Fpasswd",
    "/etc/passwd",
    "/files/" + quote("/etc/passwd", safe=""),
    "/files/%c0%ae%c0%ae%2fetc%2fpasswd",
]


@pytest.mark.parametrize("path", HOSTILE_PATHS)
def test_hostile_paths_never_reach_the_file_system(server_url, path):
    status, headers, body = request(server_url, path)
    assert status in (400, 404), (path, status)
    assert b"root:" not in body and b"DUCKDB" not in body and b"PAR1" not in body and b"import" not in body


def test_files_of_the_database_folder_are_not_served_by_their_paths(server_url, served_database):
    archive = catalog.query(served_database, "SELECT archive FROM files LIMIT 1").to_pylist()[0]["archive"]
    assert served_database.exists(archive)
    for path in (archive, "catalog.duckdb", "schema/entries.parquet"):
        assert request(server_url, "/files/" + quote(path, safe=""))[0] == 404
        assert request(server_url, "/files/" + path)[0] == 404


def test_sql_endpoint_answers_selects_as_json(server_url):
    status, result = get_json(server_url, "/api/sql?q=" + quote("SELECT entryId, gene FROM entries ORDER BY entryId"))
    assert status == 200 and result["columns"] == ["entryId", "gene"] and not result["truncated"]
    assert [r[0] for r in result["rows"]] == ["SM-P1-F1", "SM-P2-F1", "SM-P3-F1", "SM-P3-F2", "SM-P41068-F1"]
    body = json.dumps({"sql": "SELECT count(*) AS n FROM residues"}).encode()
    status, result = get_json(
        server_url, "/api/sql", method="POST", body=body, headers={"Content-Type": "application/json"}
    )
    assert status == 200 and result["rows"] == [[196 + 13 + 13 + 20 + 20]]
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    for body in (b"SELECT 2 AS two", b"q=SELECT+2+AS+two"):  # curl --data sends a raw query as a form
        assert get_json(server_url, "/api/sql", method="POST", body=body, headers=form)[1]["rows"] == [[2]]


@pytest.mark.parametrize(
    "sql",
    [
        "COPY entries TO 'entries/x.parquet'",
        "SELECT 1; SELECT 2",
        "ATTACH 'x.duckdb'",
        "INSTALL httpfs",
        "SET threads = 64",
        "CREATE TABLE t AS SELECT 1",
        "EXPLAIN SELECT * FROM entries",
        "PIVOT entries ON gene USING count(*)",
        "SELECT * FROM read_csv('/etc/passwd')",
        "DROP VIEW entries",
        "SELECT * FROM duckdb_settings()",
        "SELECT current_setting('file_search_path')",
        "SELECT * FROM read_blob('catalog.duckdb')",
    ],
)
def test_sql_endpoint_refuses_everything_but_one_read_only_select(server_url, served_database, sql):
    before = sorted(served_database.list_files("."))
    status, result = get_json(server_url, "/api/sql", method="POST", body=sql.encode())
    assert status == 400 and result["error"] and "Traceback" not in result["error"]
    assert str(served_database.root) not in result["error"]
    assert sorted(served_database.list_files(".")) == before
    assert get_json(server_url, "/api/sql?q=SELECT%201%20AS%20one")[1]["rows"] == [[1]]


def test_sql_timeout_and_row_limit(server_url):
    slow = "SELECT count(*) FROM range(100000) a, range(100000) b, range(1000) c"
    status, result = get_json(server_url, "/api/sql?q=" + quote(slow))
    assert status == 504 and "2 s limit" in result["error"]
    status, result = get_json(server_url, "/api/sql?q=" + quote("SELECT * FROM range(1000)"))
    assert status == 200 and result["truncated"] and len(result["rows"]) == result["rowLimit"] == 50


def test_export_streams_the_selected_entries_files(server_url, served_database):
    sql = "SELECT entryId FROM entries WHERE uniprotAccession = 'P3'"
    status, headers, body = request(server_url, "/export?sql=" + quote(sql))
    assert status == 200 and headers["content-type"] == "application/x-tar"
    with tarfile.open(fileobj=io.BytesIO(body)) as tar:
        names = tar.getnames()
        cif = tar.extractfile("SM-P3-F2-model_v1.cif.gz").read()
    assert {"SM-P3-F1-model_v1.cif.gz", "SM-P3-F2-predicted_aligned_error_v1.json.gz"} <= set(names)
    assert not any("P41068" in n for n in names)
    assert gzip.decompress(cif) == read_entry_file(served_database, "SM-P3-F2").data
    status, error = get_json(server_url, "/export?sql=" + quote("SELECT gene FROM entries"))
    assert status == 400 and "entryId" in error["error"]


def test_pages_escape_what_they_show_and_stay_local(server_url):
    status, headers, page = request(server_url, "/entry/P2")
    assert status == 200 and b"<script>alert(1)</script>" not in page and b"&lt;script&gt;" in page
    assert "default-src 'self'" in headers["content-security-policy"]
    assert b'href="/files/SM-P2-F1-model_v1.pdb"' in page
    status, _, page = request(server_url, "/?q=rbsD")
    assert status == 200 and b"/entry/P41068" in page
    assert request(server_url, "/entry/Q99999")[0] == 404


def test_concurrent_load_is_answered_in_full_with_flat_memory(server_url):
    paths = ["/api/prediction/P41068", f"/files/{CIF}", "/files/SM-P3-F1-confidence_v1.json", "/api/prediction/P3"]

    def client(count: int, failures: list) -> None:
        connection = http.client.HTTPConnection(urlsplit(server_url).netloc, timeout=30)
        for i in range(count):
            connection.request("GET", paths[i % len(paths)], headers={"Accept-Encoding": "gzip"})
            response = connection.getresponse()
            if response.status != 200 or not response.read():
                failures.append(response.status)
        connection.close()

    def run_load(threads: int, per_thread: int) -> list:
        failures: list = []
        workers = [threading.Thread(target=client, args=(per_thread, failures)) for _ in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        return failures

    assert run_load(4, 100) == []  # warm-up
    before = resident_mib()
    assert run_load(8, 400) == []  # 3,200 requests
    grown_mib = resident_mib() - before
    assert grown_mib < 50, f"resident memory grew {grown_mib:.0f} MiB under load"


def test_identity_stored_members_are_served_by_ranged_reads(tmp_path):
    from conftest import ThreadedServer
    from fake_database import index_tables

    from structome.jobs.serve.app import StructomeServer
    from structome.storage.archive import ArchiveWriter
    from structome.storage.entry_index import EntryIndex
    from structome.storage.layout import DatabaseLayout

    text = b"data_x\n" + b"".join(b"ATOM %06d\n" % i for i in range(5000))
    with (
        open(tmp_path / "archive.tar", "wb") as stream,
        ArchiveWriter(stream, archive="archive.tar", mtime=0) as archive,
    ):
        location = archive.add("SM-X-F1", "cif", "SM-X-F1-model_v1.cif", text, compress=False)
    server = StructomeServer(DatabaseLayout(tmp_path), EntryIndex(*index_tables(tmp_path / "index", [], [location])))
    with ThreadedServer(server.app) as url:
        status, headers, body = request(url, "/files/SM-X-F1-model_v1.cif", headers={"Accept-Encoding": "gzip"})
        assert status == 200 and body == text and "content-encoding" not in headers
        assert headers["etag"] == f'"{location.sha256}"'
        status, headers, body = request(url, "/files/SM-X-F1-model_v1.cif", headers={"Range": "bytes=7-19"})
        assert status == 206 and body == text[7:20] and headers["content-range"] == f"bytes 7-19/{len(text)}"


@pytest.mark.parametrize("processes", ["1", "2"])
def test_the_serve_command_answers_and_stops(served_database, processes):
    import socket
    import subprocess
    import sys
    import time
    from pathlib import Path

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [
        str(Path(sys.executable).with_name("structome")),
        "serve",
        "--db",
        served_database.location,
        "--port",
        str(port),
        "--sql-workers",
        "1",
        "--workers",
        processes,
    ]
    server = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    try:
        url, deadline = f"http://127.0.0.1:{port}", time.monotonic() + 60
        while True:
            try:
                status, entries = get_json(url, "/api/prediction/P41068")
                break
            except OSError:
                assert server.poll() is None and time.monotonic() < deadline, "structome serve did not start"
                time.sleep(0.2)
        assert status == 200 and entries[0]["entryId"] == "SM-P41068-F1"
        assert get_json(url, "/api/sql?q=SELECT%20count(*)%20AS%20n%20FROM%20entries")[1]["rows"] == [[5]]
    finally:
        server.terminate()
        _, stderr = server.communicate(timeout=30)  # reads and closes the pipe
        assert server.returncode in (0, -15)  # uvicorn shuts down, then re-raises SIGTERM
    assert "serving" in stderr


def test_an_object_store_database_is_served_without_sql(s3_database):
    from conftest import ThreadedServer
    from fake_database import entry, random_prediction, write_database

    from structome.jobs.serve.app import create_server
    from structome.models.types import PredictionRequest

    prediction = random_prediction(PredictionRequest("p-a", "MKVLAAGIVGLLW"), 0)
    layout = write_database(s3_database, [entry("SM-P1-F1", "P1", "MKVLAAGIVGLLW", "p-a")], [prediction])
    server = create_server(s3_database, sql_workers=2)
    assert server.sql is None
    with ThreadedServer(server.app) as url:
        assert get_json(url, "/api/prediction/P1")[1][0]["entryId"] == "SM-P1-F1"
        status, headers, body = request(url, "/files/SM-P1-F1-model_v1.cif", headers={"Accept-Encoding": "gzip"})
        assert status == 200 and gzip.decompress(body) == read_entry_file(layout, "SM-P1-F1").data
        status, _, part = request(url, "/files/SM-P1-F1-model_v1.cif", headers={"Range": "bytes=0-9"})
        assert status == 206 and part == read_entry_file(layout, "SM-P1-F1").data[:10]
        assert get_json(url, "/api/sql?q=SELECT%201")[0] == 503


def test_an_afdb_style_client_script_works_unchanged(server_url):
    """What scripts written against alphafold.ebi.ac.uk do: the API, then the URLs it gives, with urllib."""
    import urllib.request

    import gemmi

    info = json.load(urllib.request.urlopen(f"{server_url}/api/prediction/P41068"))[0]
    cif = urllib.request.urlopen(info["cifUrl"]).read().decode()
    assert len(gemmi.cif.read_string(cif).sole_block().find_loop("_ma_qa_metric_global.metric_value")) == 2
    pae = json.load(urllib.request.urlopen(info["paeDocUrl"]))[0]
    assert len(pae["predicted_aligned_error"]) == 196 and pae["max_predicted_aligned_error"] == 31.75


def test_a_query_past_the_memory_bound_fails_alone(server_url):
    status, result = get_json(server_url, "/api/sql?q=" + quote("SELECT length(repeat('x', 3000000000)) AS n"))
    assert status in (400, 503) and "memory" in result["error"].lower()
    assert get_json(server_url, "/api/sql?q=SELECT%201%20AS%20one")[1]["rows"] == [[1]]


def test_entries_of_a_later_build_are_served_after_the_reload_interval(tmp_path):
    import time

    from conftest import ThreadedServer
    from fake_database import entry, random_prediction, write_database

    from structome.jobs.serve.app import create_server
    from structome.models.types import PredictionRequest

    first = random_prediction(PredictionRequest("p-a", "MKVLAAGIVGLLW"), 0)
    write_database(tmp_path / "db", [entry("SM-P1-F1", "P1", "MKVLAAGIVGLLW", "p-a")], [first])
    server = create_server(str(tmp_path / "db"), sql_workers=1, reload_interval_s=0.2)
    with ThreadedServer(server.app) as url:
        assert get_json(url, "/api/prediction/P2")[0] == 404
        second = random_prediction(PredictionRequest("p-b", "MKKLLAW"), 1)
        write_database(tmp_path / "db", [entry("SM-P2-F1", "P2", "MKKLLAW", "p-b")], [second])  # a later build
        deadline = time.monotonic() + 20
        while get_json(url, "/api/prediction/P2")[0] != 200:
            assert time.monotonic() < deadline, "the new entry never appeared"
            time.sleep(0.1)
        status, headers, body = request(url, "/files/SM-P2-F1-model_v1.cif")
        assert status == 200 and body.startswith(b"data_")
        assert get_json(url, "/api/prediction/P1")[0] == 200
        assert get_json(url, "/api/sql?q=SELECT%20count(*)%20FROM%20entries")[1]["rows"] == [[2]]
