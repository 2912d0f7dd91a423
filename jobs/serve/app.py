"""`structome serve`: AlphaFold-DB-compatible HTTP API, file downloads, read-only SQL, entry pages, bulk export.

Starlette on uvicorn. Entries and file locations are looked up by point queries on the catalog's views
(storage.entry_index), off the event loop; a file download is one ranged read of its archive member, in a thread
(NFS and object stores block), and rendered files (PNG, PDB) are made in a small bounded pool of threads. SQL runs
in sandboxed worker processes (structome.jobs.serve.sql_sandbox). Every route answers a client error as JSON (API,
files) or a small HTML page, never a stack trace; file names are looked up in the index and never joined to a path.
With an access token, every route answers only requests that show it (structome.jobs.serve.auth).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

import anyio
import duckdb
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import ASGIApp

from structome.jobs.serve import pages
from structome.jobs.serve.auth import TokenRequired
from structome.jobs.serve.http_files import (
    ByteRange,
    InvalidRange,
    RangeNotSatisfiable,
    accepts_gzip,
    etag_matches,
    if_range_allows,
    parse_range,
)
from structome.jobs.serve.sql_sandbox import (
    DEFAULT_SQL_WORKERS,
    SqlError,
    SqlLimits,
    SqlRefused,
    SqlResourceError,
    SqlResult,
    SqlSandbox,
    SqlTimeout,
)
from structome.jobs.serve.viewer_assets import ViewerAssets
from structome.storage import export, pae_image
from structome.storage.archive import FileLocation, decode
from structome.storage.entry_index import DerivedFile, EntryIndex, visible_state
from structome.storage.layout import DatabaseLayout
from structome.storage.mmcif import mmcif_to_pdb
from structome.storage.reader import ArchiveReader

logger = logging.getLogger(__name__)

MEDIA_TYPES = {".cif": "chemical/x-mmcif", ".pdb": "chemical/x-pdb", ".json": "application/json", ".png": "image/png"}
# Files rendered on request from a stored one (storage.entry_index.DERIVED_KINDS), by suffix.
RENDERERS = {".png": pae_image.pae_png_from_json, ".pdb": lambda cif: mmcif_to_pdb(cif.decode()).encode()}
# Pages load only what this server serves (the Mol* build included): the browser itself enforces "no request
# leaves the machine".
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; img-src 'self' data: blob:; style-src 'self' 'unsafe-inline'; "
    "script-src 'self' 'unsafe-eval' 'wasm-unsafe-eval'; worker-src 'self' blob:; connect-src 'self' data:; "
    "object-src 'none'; base-uri 'none'; frame-ancestors 'self'"
)
MAX_SQL_BYTES = 100_000
RENDER_THREADS = 2  # files rendered at once (PNG, PDB: CPU work); more requests for them wait their turn
SQL_ERROR_STATUS = {SqlRefused: 400, SqlTimeout: 504, SqlResourceError: 503}  # any other SqlError (bad SQL): 400


@dataclass(frozen=True)
class Representation:
    """One way of sending a file: its bytes (by range), size, validator and content coding."""

    size: int
    etag: str
    media_type: str
    content_encoding: str | None
    read: Callable[[int, int], bytes]  # (start, length) -> bytes


class StructomeServer:
    """The routes over one database; `app` is the ASGI application; `viewer` the 3D viewer files it serves."""

    def __init__(
        self,
        layout: DatabaseLayout,
        index: EntryIndex,
        sql: SqlSandbox | None = None,
        reload_interval_s: float = 0.0,
        viewer: ViewerAssets | None = None,
        renderers: Mapping[str, Callable[[bytes], bytes]] = RENDERERS,
        auth_token: str | None = None,
        public_url: str | None = None,
    ):
        self.layout, self.index, self.sql = layout, index, sql
        self.public_url = public_url.rstrip("/") if public_url else None  # else the client's Host header
        self.renderers = renderers
        self._render_limiter: anyio.CapacityLimiter | None = None  # made on the event loop, at first use
        if viewer is None:
            viewer = ViewerAssets.missing("this server was made without viewer files")
        self.viewer = viewer
        self.reload_interval_s = reload_interval_s
        self._state = visible_state(layout) if reload_interval_s > 0 else None
        self.archives = ArchiveReader(layout)
        self._rendered = functools.lru_cache(maxsize=64)(self._render)  # per server, bounded
        self.routes = Starlette(
            routes=[
                Route("/", self.search, methods=["GET"]),
                Route("/entry/{accession:path}", self.entry_page, methods=["GET"]),
                Route("/api/prediction/{accession:path}", self.prediction, methods=["GET"]),
                Route("/api/sql", self.run_sql, methods=["GET", "POST"]),
                Route("/files/{name:path}", self.download, methods=["GET", "HEAD"]),
                Route("/export", self.export_tar, methods=["GET"]),
                Route("/static/{name}", self.static, methods=["GET", "HEAD"]),
            ],  # `:path`: an accession may hold a `/` (sent as %2F, which the route sees decoded)
            exception_handlers=self._exception_handlers(),
            lifespan=self._lifespan,
        )
        self.routes.router.redirect_slashes = False  # an unknown path is a 404, never a redirect to a guess
        self.app: ASGIApp = TokenRequired(self.routes, auth_token) if auth_token else self.routes  # what uvicorn runs

    @contextlib.asynccontextmanager
    async def _lifespan(self, app):
        reloading = asyncio.create_task(self._reload_forever()) if self.reload_interval_s > 0 else None
        yield
        if reloading is not None:
            reloading.cancel()
        self.archives.close()
        self.index.close()
        if self.sql is not None:
            self.sql.close()

    async def _reload_forever(self) -> None:
        while True:
            await asyncio.sleep(self.reload_interval_s)
            try:
                await run_in_threadpool(self.reload_if_changed)
            except (OSError, duckdb.Error) as error:  # a shard being committed right now: try again next time
                logger.warning("could not reload the index of %s: %s", self.layout.location, error)

    def reload_if_changed(self) -> bool:
        """Swap in a new index when what the database shows changed (storage.entry_index.visible_state); True
        if it did. The new snapshot is opened first, then swapped in by one assignment: a request uses the
        index it started with (and its cache), never a mix; the old one closes when the last of them ends."""
        state = visible_state(self.layout)  # before opening: a change while opening shows up next time
        if state == self._state:
            return False
        self.index, self._state = EntryIndex.load(self.layout), state
        if self.sql is not None:
            self.sql.renew()  # its workers' views are snapshots too
        logger.info("index reloaded: %d entries", len(self.index))
        return True

    # --- AlphaFold DB API and files

    async def prediction(self, request: Request) -> Response:
        answer = await run_in_threadpool(self.index.prediction_json, request.path_params["accession"])
        if answer is None:
            return _json_error(404, f"no entry for {request.path_params['accession']!r}")
        # Absolute URLs, as AFDB gives them, so that scripts can fetch entry["cifUrl"] as it is. The pattern is a
        # whole `"key": "/files/` (inside a JSON string every quote is escaped, so text cannot match it).
        base = (self.public_url or str(request.base_url).rstrip("/")).encode()
        return Response(answer.replace(b'": "/files/', b'": "' + base + b"/files/"), media_type="application/json")

    async def download(self, request: Request) -> Response:
        name = request.path_params["name"]
        wants_range = "range" in request.headers
        representation = await self._representation(
            name, accepts_gzip(request.headers.get("accept-encoding")) and not wants_range
        )
        if representation is None:
            return _json_error(404, f"no file {name!r}")
        headers = {
            "ETag": representation.etag,
            "Accept-Ranges": "bytes",
            "Vary": "Accept-Encoding",
            "Cache-Control": "public, max-age=3600",
        }
        if representation.content_encoding:
            headers["Content-Encoding"] = representation.content_encoding
        if etag_matches(request.headers.get("if-none-match"), representation.etag):
            return Response(status_code=304, headers=headers)
        try:
            byte_range = _requested_range(request, representation)
        except InvalidRange as error:
            return _json_error(400, str(error))
        except RangeNotSatisfiable:
            return Response(status_code=416, headers={**headers, "Content-Range": f"bytes */{representation.size}"})
        part = byte_range or ByteRange(0, representation.size)
        headers["Content-Length"] = str(part.length)
        if byte_range:
            headers["Content-Range"] = byte_range.content_range(representation.size)
        body = b"" if request.method == "HEAD" else await self._blocking(representation.read, part.start, part.length)
        return Response(
            body, status_code=206 if byte_range else 200, headers=headers, media_type=representation.media_type
        )

    async def _representation(self, name: str, send_gzip: bool) -> Representation | None:
        media_type = MEDIA_TYPES.get(name[name.rfind(".") :], "application/octet-stream")
        index = self.index
        if (location := await run_in_threadpool(index.stored_file, name)) is not None:
            return self._stored_representation(location, media_type, send_gzip)
        if (derived := await run_in_threadpool(index.derived_file, name)) is not None:
            content = await self._rendering(derived)
            return Representation(
                len(content),
                f'"{derived.source.sha256}{derived.suffix}"',
                media_type,
                None,
                lambda s, n: content[s : s + n],
            )
        return None

    async def _blocking(self, function, *args):
        """Reads (a cold page, an NFS folder, an object store) and gunzip, off the event loop (Starlette's pool)."""
        return await run_in_threadpool(function, *args)

    async def _rendering(self, derived: DerivedFile) -> bytes:
        """A rendered file (cached), made in at most RENDER_THREADS threads: a 1,400-residue PNG takes a while."""
        if self._render_limiter is None:
            self._render_limiter = anyio.CapacityLimiter(RENDER_THREADS)
        return await anyio.to_thread.run_sync(self._rendered, derived, limiter=self._render_limiter)

    def _stored_representation(self, location: FileLocation, media_type: str, send_gzip: bool) -> Representation:
        etag = f'"{location.sha256}"'
        if location.encoding == "identity":
            return Representation(location.size, etag, media_type, None, functools.partial(self._read, location))
        if send_gzip:
            return Representation(
                location.length, etag, media_type, "gzip", lambda s, n: self._stored_bytes(location)[s : s + n]
            )
        return Representation(
            location.size,
            f'"{location.sha256}.identity"',
            media_type,
            None,
            lambda s, n: decode(self._stored_bytes(location), location.encoding)[s : s + n],
        )

    def _read(self, location: FileLocation, start: int, length: int) -> bytes:
        """Part of an identity-stored member: one ranged read (checked against the checksum when whole)."""
        if start == 0 and length == location.length:
            return self._stored_bytes(location)
        return self.archives.read(location.archive, location.offset + start, length)

    def _stored_bytes(self, location: FileLocation) -> bytes:
        return self.archives.read_verified(location.archive, location.offset, location.length, location.sha256)

    def _render(self, derived: DerivedFile) -> bytes:
        return self.renderers[derived.suffix](decode(self._stored_bytes(derived.source), derived.source.encoding))

    # --- SQL and export

    async def run_sql(self, request: Request) -> Response:
        result = await self._user_query(request, "the SQL endpoint is disabled on this server")
        if isinstance(result, Response):
            return result
        return JSONResponse(
            {
                "columns": result.columns,
                "types": result.types,
                "rows": result.rows,
                "rowCount": len(result.rows),
                "truncated": result.truncated,
                "rowLimit": self._row_limit,
                "elapsedSeconds": round(result.elapsed_s, 4),
            }
        )

    async def export_tar(self, request: Request) -> Response:
        result = await self._user_query(request, "export needs the SQL endpoint, which is disabled on this server")
        if isinstance(result, Response):
            return result
        if result.truncated:
            return _json_error(
                400,
                f"the query selects more than {self._row_limit} rows; "
                "export in parts, or with `structome export` on the database's machine",
            )
        if not result.rows:
            return _json_error(400, "the export query selected no entries")
        try:
            position = export.entry_id_position(result.columns)
            entry_ids = [row[position] for row in result.rows]
            if not all(entry_id is None or isinstance(entry_id, str) for entry_id in entry_ids):  # NULL: unknown
                return _json_error(400, f"the entryId column must be text, not {result.types[position]}")
            files = await run_in_threadpool(export.export_files, self.layout, entry_ids)
        except (export.ExportError, export.UnknownEntriesError) as error:
            return _json_error(400, str(error))
        return StreamingResponse(
            export.stream_tar(self.layout, files),
            media_type="application/x-tar",
            headers={"Content-Disposition": 'attachment; filename="structome-export.tar"'},
        )

    @property
    def _row_limit(self) -> int | None:
        return self.sql.limits.row_limit if self.sql is not None else None

    async def _user_query(self, request: Request, disabled: str) -> SqlResult | Response:
        """The request's query run in the sandbox, or the error response to send instead."""
        sql = await _sql_text(request)
        if isinstance(sql, Response):
            return sql
        if self.sql is None:
            return _json_error(503, disabled)
        try:
            return await run_in_threadpool(self.sql.run, sql)
        except SqlError as error:
            return _json_error(SQL_ERROR_STATUS.get(type(error), 400), str(error))

    # --- pages

    async def search(self, request: Request) -> Response:
        query = request.query_params.get("q", "")
        found = await run_in_threadpool(self.index.search, query)
        return _html(
            pages.search_page(
                query, found.records, found.total, counted_all=found.counted_all, scanned_all=found.scanned_all
            )
        )

    async def entry_page(self, request: Request) -> Response:
        accession = request.path_params["accession"]
        entries = await run_in_threadpool(self.index.predictions, accession)
        if not entries:
            return _html(pages.search_page(accession, [], 0), status_code=404)
        return _html(pages.entry_page(entries, accession, self.viewer))

    async def static(self, request: Request) -> Response:
        asset = pages.static_asset(request.path_params["name"], self.viewer)
        if asset is None:
            return _json_error(404, "no such asset")
        content, media_type = asset
        return Response(content, media_type=media_type, headers={"Cache-Control": "public, max-age=86400"})

    # --- errors

    def _exception_handlers(self) -> dict[Any, Any]:  # Starlette types a handler by the base Exception only
        return {HTTPException: self._http_error, Exception: self._server_error}

    async def _http_error(self, request: Request, error: HTTPException) -> Response:
        return _json_error(error.status_code, error.detail)

    async def _server_error(self, request: Request, error: Exception) -> Response:
        logger.exception("error answering %s %s", request.method, request.url.path)
        return _json_error(500, "internal error (logged on the server)")


async def _sql_text(request: Request) -> str | Response:
    """The query of a GET (?q= or ?sql=) or POST (JSON {"sql": ...}, a form, or the raw body)."""
    sql: object
    if request.method == "GET":
        sql = request.query_params.get("q") or request.query_params.get("sql")
    else:
        body = await request.body()
        if len(body) > MAX_SQL_BYTES:
            return _json_error(413, f"the query is longer than {MAX_SQL_BYTES} bytes")
        sql = _sql_from_body(body, request.headers.get("content-type", ""))
    if sql is not None and not isinstance(sql, str):
        return _json_error(400, f'"sql" must be the query as a string, not {type(sql).__name__}')
    if not isinstance(sql, str) or not sql.strip():
        return _json_error(400, 'give the query as ?q=..., or POST {"sql": "..."}')
    return sql


def _sql_from_body(body: bytes, content_type: str) -> object:
    """The query text, None, or what a JSON body gave instead of text (the caller refuses it)."""
    text = body.decode("utf-8", errors="replace")
    if content_type.startswith("application/json"):
        try:
            payload = json.loads(text)
        except json.JSONDecodeError:
            return None
        return payload.get("sql") or payload.get("q") if isinstance(payload, dict) else None
    if content_type.startswith("application/x-www-form-urlencoded"):  # also what `curl --data 'SELECT ...'` sends
        form = parse_qs(text)
        values = form.get("sql") or form.get("q")
        if values:
            return values[0]
    return text


def _requested_range(request: Request, representation: Representation) -> ByteRange | None:
    if not if_range_allows(request.headers.get("if-range"), representation.etag):
        return None
    return parse_range(request.headers.get("range"), representation.size)


def _json_error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message, "status": status}, status_code=status)


def _html(content: str, status_code: int = 200) -> HTMLResponse:
    return HTMLResponse(
        content,
        status_code=status_code,
        headers={"Content-Security-Policy": CONTENT_SECURITY_POLICY, "X-Content-Type-Options": "nosniff"},
    )


def create_server(
    location: str,
    *,
    sql_workers: int = DEFAULT_SQL_WORKERS,
    sql_limits: SqlLimits | None = None,
    viewer_assets=None,
    reload_interval_s: float = 0.0,
    auth_token: str | None = None,
    public_url: str | None = None,
) -> StructomeServer:
    """Load the index, the viewer files and start the SQL workers (sql_workers=0 turns off SQL and export).

    `viewer_assets`: an offline folder with the viewer files (else `$STRUCTOME_VIEWER_ASSETS`, else the cache).
    `auth_token`: every request must show it (structome.jobs.serve.auth); None serves everyone.
    `public_url`: the base of the absolute URLs in API answers (else the request's own, from its Host header).
    """
    viewer = ViewerAssets.load(viewer_assets)  # logs why, when the pages must go without the 3D viewer
    layout = DatabaseLayout(location)
    if not layout.exists():
        raise FileNotFoundError(f"{location} is not a structome database (no catalog)")
    index = EntryIndex.load(layout)
    sql = None
    if sql_workers and not layout.is_local:
        logger.warning("no SQL endpoint for %s: the SQL sandbox needs a local database", location)
    elif sql_workers:
        sql = SqlSandbox(layout, sql_limits or SqlLimits(), workers=sql_workers)
    return StructomeServer(layout, index, sql, reload_interval_s, viewer, auth_token=auth_token, public_url=public_url)
