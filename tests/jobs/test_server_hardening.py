"""`structome serve` under hostile or unlucky conditions, over a real socket: slow renders and reads, access
tokens, request limits (header size, slow clients, malformed values), odd accessions, and the command's errors."""

from __future__ import annotations

import json
import threading
import time

import pytest
from conftest import ThreadedServer
from test_server import get_json, request

from structome.jobs.serve.app import RENDERERS, StructomeServer
from structome.storage.entry_index import EntryIndex

PNG = "/files/SM-P41068-F1-predicted_aligned_error_v1.png"
CIF = "/files/SM-P41068-F1-model_v1.cif"
STALL_S = 1.5


def _slow_png(pae: bytes) -> bytes:
    time.sleep(STALL_S)  # what a 1,400-residue plot costs, without the CPU
    return RENDERERS[".png"](pae)


def _slowed_reads(server: StructomeServer) -> None:
    """Every archive read of the server takes STALL_S, like a cold read on an NFS folder."""
    read_verified = server.archives.read_verified

    def slow(*args):
        time.sleep(STALL_S)
        return read_verified(*args)

    server.archives.read_verified = slow  # type: ignore[method-assign]


@pytest.mark.parametrize("slow", ["render", "read"])
def test_a_slow_render_or_read_does_not_delay_other_requests(served_database, slow):
    renderers = {**RENDERERS, ".png": _slow_png} if slow == "render" else RENDERERS
    server = StructomeServer(served_database, EntryIndex.load(served_database), renderers=renderers)
    if slow == "read":
        _slowed_reads(server)
    with ThreadedServer(server.app) as url:
        answers: list = []
        stalled = threading.Thread(target=lambda: answers.append(request(url, PNG if slow == "render" else CIF)))
        stalled.start()
        time.sleep(0.3)  # the slow request is in its render or read now
        started = time.monotonic()
        status, entries = get_json(url, "/api/prediction/P41068")
        elapsed = time.monotonic() - started
        stalled.join()
    assert status == 200 and entries[0]["entryId"] == "SM-P41068-F1"
    assert elapsed < STALL_S / 2, f"/api/prediction waited {elapsed:.2f} s behind a slow {slow}"
    assert answers[0][0] == 200


TOKEN = "s3cret-token_for.tests~1"
GUARDED_PATHS = [
    "/api/prediction/P41068",
    CIF,
    "/",
    "/entry/P41068",
    "/static/style.css",
    "/api/sql?q=SELECT%201",
    "/nope",
]


@pytest.fixture(scope="module")
def guarded_url(served_database):
    from structome.jobs.serve.app import create_server

    server = create_server(served_database.location, sql_workers=1, auth_token=TOKEN)
    with ThreadedServer(server.app) as url:
        yield url


@pytest.mark.parametrize("path", GUARDED_PATHS)
@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Bearer {TOKEN[:-1]}X"}, {"Authorization": TOKEN}],
)
def test_every_route_needs_the_token(guarded_url, path, headers):
    status, answer_headers, body = request(guarded_url, path, headers=headers)
    assert status == 401 and answer_headers["www-authenticate"].startswith("Bearer")
    assert b"Bearer" in body and b"SM-P41068" not in body


@pytest.mark.parametrize("path", GUARDED_PATHS)
def test_a_bearer_token_opens_every_route(guarded_url, path):
    status, _, _ = request(guarded_url, path, headers={"Authorization": f"Bearer {TOKEN}"})
    assert status == (404 if path == "/nope" else 200)


def test_a_browser_link_with_the_token_sets_a_cookie_for_the_page_requests(guarded_url):
    status, headers, page = request(guarded_url, f"/entry/P41068?token={TOKEN}")
    assert status == 200 and b"SM-P41068-F1" in page
    cookie = headers["set-cookie"].split(";")[0]
    assert "HttpOnly" in headers["set-cookie"] and "SameSite=Strict" in headers["set-cookie"]
    assert request(guarded_url, CIF, headers={"Cookie": cookie})[0] == 200
    assert request(guarded_url, CIF, headers={"Cookie": "structome_token=wrong"})[0] == 401
    assert request(guarded_url, "/?token=wrong")[0] == 401


def test_tokens_that_cannot_travel_in_a_header_are_refused():
    from structome.jobs.serve.auth import TokenRequired

    for token in ("", " padded ", "semi;colon", "new\nline"):
        with pytest.raises(ValueError, match="access token"):
            TokenRequired(None, token)  # type: ignore[arg-type]


# --- request limits and malformed values


def test_malformed_values_are_400s_with_a_message(server_url):
    for body in (b'{"sql": 123}', b'{"sql": ["SELECT 1"]}', b'{"q": {"a": 1}}'):
        status, error = get_json(
            server_url, "/api/sql", method="POST", body=body, headers={"Content-Type": "application/json"}
        )
        assert status == 400 and "string" in error["error"], body
    status, error = get_json(server_url, "/export?sql=SELECT%201%20AS%20entryId")
    assert status == 400 and "text" in error["error"]
    for header in (f"bytes=0-{'9' * 5000}", f"bytes={'1' * 5000}-", f"bytes=-{'7' * 30}"):
        status, error = get_json(server_url, CIF, headers={"Range": header})
        assert status == 400 and "Range" in error["error"]
    assert request(server_url, CIF, headers={"Range": f"bytes=0-{'9' * 18}"})[0] == 206  # long, but a number


def _raw_exchange(url: str, chunks, pause_s: float = 0.0, read_timeout_s: float = 10.0) -> bytes:
    """Send raw bytes on one connection (stopping quietly if the server hangs up), then read until it closes."""
    import socket
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=read_timeout_s) as connection:
        try:
            for chunk in chunks:
                connection.sendall(chunk)
                time.sleep(pause_s)
        except (BrokenPipeError, ConnectionResetError):
            pass
        answer = b""
        try:
            while data := connection.recv(65536):
                answer += data
        except ConnectionResetError:
            pass
        return answer


def test_oversized_request_headers_get_431_and_are_not_buffered(server_url):
    from structome.jobs.serve.protocol import MAX_HEADER_BYTES

    chunks = [b"GET /api/prediction/P41068 HTTP/1.1\r\nHost: x\r\nX-Big: "] + [b"a" * 65536] * 64  # 4 MiB, no end
    answer = _raw_exchange(server_url, chunks)
    assert answer.startswith(b"HTTP/1.1 431 ") and str(MAX_HEADER_BYTES).encode() in answer
    many = [b"GET / HTTP/1.1\r\nHost: x\r\n"] + [b"X-%d: %s\r\n" % (i, b"b" * 100) for i in range(2000)]
    assert _raw_exchange(server_url, [b"".join(many)]).startswith(b"HTTP/1.1 431 ")
    status, entries = get_json(server_url, "/api/prediction/P41068", headers={"X-Normal": "c" * 4000})
    assert status == 200 and entries


class _QuickProtocol:
    """The server's protocol with a 1 s request deadline (the default is 30 s)."""

    @staticmethod
    def make():
        from structome.jobs.serve.protocol import BoundedHttpProtocol

        return type("QuickProtocol", (BoundedHttpProtocol,), {"request_timeout_s": 1.0})


@pytest.fixture(scope="module")
def quick_url(structome_server):
    with ThreadedServer(structome_server.app, http=_QuickProtocol.make()) as url:
        yield url


def test_a_slowloris_client_is_cut_off_at_the_request_deadline(quick_url):
    started = time.monotonic()
    trickle = [b"GET /api/prediction/P41068 HTTP/1.1\r\n"] + [b"X-Slow: %d\r\n" % i for i in range(40)]
    answer = _raw_exchange(quick_url, trickle, pause_s=0.1)  # a header every 0.1 s: 4 s in all
    assert answer.startswith(b"HTTP/1.1 408 ") and time.monotonic() - started < 3.0


def test_a_silent_connection_and_a_late_body_are_closed(quick_url):
    started = time.monotonic()
    assert _raw_exchange(quick_url, []).startswith(b"HTTP/1.1 408 ") and time.monotonic() - started < 3.0
    late_body = [b"POST /api/sql HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nSELECT"]
    started = time.monotonic()
    assert b" 200 " not in _raw_exchange(quick_url, late_body) and time.monotonic() - started < 3.0
    assert get_json(quick_url, "/api/prediction/P41068")[0] == 200  # a normal request is not affected


# --- accessions with a slash, and the public base URL


@pytest.fixture(scope="module")
def slash_url(tmp_path_factory):
    from fake_database import entry, random_prediction, write_database

    from structome.jobs.serve.app import create_server
    from structome.models.types import PredictionRequest

    prediction = random_prediction(PredictionRequest("p-s", "MKVLAAGIVGLLW"), 0)
    folder = tmp_path_factory.mktemp("slash") / "db"
    write_database(folder, [entry("SM-A/B1-F1", "A/B1", "MKVLAAGIVGLLW", "p-s", gene="slsH")], [prediction])
    server = create_server(str(folder), sql_workers=0, public_url="https://structures.example.org/db/")
    with ThreadedServer(server.app) as url:
        yield url


def test_an_accession_with_a_slash_is_reachable_from_its_links(slash_url):
    import html
    import re
    from urllib.parse import urlsplit

    status, entries = get_json(slash_url, "/api/prediction/A%2FB1")
    assert status == 200 and entries[0]["entryId"] == "SM-A/B1-F1"
    status, _, page = request(slash_url, "/?q=slsH")
    (link,) = re.findall(rb'href="(/entry/[^"]+)"', page)
    status, _, entry_page = request(slash_url, html.unescape(link.decode()))
    assert status == 200 and b"SM-A/B1-F1" in entry_page
    downloads = re.findall(rb'href="(/files/[^"]+\.cif)"', entry_page)
    assert downloads and request(slash_url, html.unescape(downloads[0].decode()))[0] == 200
    assert request(slash_url, urlsplit(entries[0]["cifUrl"]).path.removeprefix("/db"))[0] == 200  # behind a proxy


def test_absolute_urls_use_the_public_url_not_the_host_header(slash_url):
    status, entries = get_json(slash_url, "/api/prediction/A%2FB1", headers={"Host": "evil.example"})
    assert status == 200 and entries[0]["cifUrl"] == "https://structures.example.org/db/files/SM-A/B1-F1-model_v1.cif"
    assert "evil" not in json.dumps(entries)


# --- the serve command


def _structome(*args: str, **kwargs):
    import subprocess
    import sys
    from pathlib import Path

    command = [str(Path(sys.executable).with_name("structome")), *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=60, **kwargs)


def test_serve_on_a_missing_database_is_one_line(tmp_path):
    done = _structome("serve", "--db", str(tmp_path / "missing"), "--port", "0")
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines() == [
        f"Error: {tmp_path / 'missing'} is not a structome database (no catalog)"
    ]


@pytest.mark.parametrize("processes", ["1", "2"])
def test_serve_on_a_busy_port_is_one_line_and_never_says_serving(served_database, processes):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = _structome(
            "serve", "--db", served_database.location, "--port", str(port), "--sql-workers", "0", "--workers", processes
        )
    assert done.returncode == 1 and "Traceback" not in done.stderr and "serving" not in done.stderr
    assert done.stderr.strip().splitlines() == [f"Error: cannot listen on 127.0.0.1:{port}: Address already in use"]


def test_the_access_log_shows_requests_without_tokens(served_database, tmp_path):
    import socket
    import subprocess
    import sys
    from pathlib import Path

    token_file = tmp_path / "token"
    token_file.write_text(f"  {TOKEN}\n")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [str(Path(sys.executable).with_name("structome")), "serve", "--db", served_database.location]
    command += ["--port", str(port), "--sql-workers", "0", "--access-log", "--auth-token-file", str(token_file)]
    server = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    try:
        url, deadline = f"http://127.0.0.1:{port}", time.monotonic() + 60
        while True:
            try:
                status = request(url, f"/api/prediction/P41068?token={TOKEN}")[0]
                break
            except OSError:
                assert server.poll() is None and time.monotonic() < deadline, "structome serve did not start"
                time.sleep(0.2)
        assert status == 200 and request(url, "/api/prediction/P41068")[0] == 401
    finally:
        server.terminate()
        _, stderr = server.communicate(timeout=30)
    assert '"GET /api/prediction/P41068?token=... HTTP/1.1" 200' in stderr
    assert '"GET /api/prediction/P41068 HTTP/1.1" 401' in stderr and TOKEN not in stderr
    assert "warning" not in stderr


@pytest.mark.parametrize(
    "host, token, warned",
    [("127.0.0.1", None, False), ("localhost", None, False), ("::1", None, False), ("0.0.0.0", None, True)]
    + [("192.168.1.5", None, True), ("myhost.example", None, True), ("0.0.0.0", TOKEN, False)],
)
def test_a_server_open_beyond_this_machine_without_a_token_is_warned_about(host, token, warned):
    from structome.jobs.cli.serve import exposure_warning

    warning = exposure_warning(host, token)
    assert (warning is not None) == warned
    if warned:
        assert host in warning and "token" in warning


def test_token_options_are_checked(served_database, tmp_path):
    from click.testing import CliRunner

    from structome.jobs.cli import main

    def serve(*args):
        return CliRunner().invoke(main, ["serve", "--db", served_database.location, *args])

    (tmp_path / "token").write_text(TOKEN)
    (tmp_path / "empty").write_text("\n")
    both = serve("--auth-token", TOKEN, "--auth-token-file", str(tmp_path / "token"))
    assert both.exit_code == 2 and "not both" in both.output
    assert "access token" in serve("--auth-token-file", str(tmp_path / "empty")).output
    assert "access token" in serve("--auth-token", "has space").output
    assert "--public-url" in serve("--public-url", "structures.example.org").output
