"""The server's lookups: AFDB API records, file locations by name, and text search, as SQL point queries.

An `EntryIndex` is one snapshot of the visible files (one reading of the manifest and the shards). Lookups by
key (an accession or entryId, a file name) read the one row group of `entries` or `files` whose key range holds
it, with pyarrow (storage.key_index: the row groups' key ranges from the footers, bisected): no SQL planning per
lookup, no decode of any other row group. Text search runs SQL on an in-memory DuckDB with views over the same
files (`catalog.connect_detached`), each thread through its own cursor. Ready answers are kept in a bounded LRU
cache that lives and dies with the snapshot, so a new snapshot never serves an old answer. Nothing is held per
entry.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from collections import defaultdict
from collections.abc import Hashable
from dataclasses import dataclass

import duckdb

from structome.models.types import FileKind
from structome.storage import catalog, schema
from structome.storage.archive import FILE_COLUMNS, FileLocation
from structome.storage.key_index import SortedTable
from structome.storage.layout import DatabaseLayout
from structome.storage.lru import MISS as _MISS
from structome.storage.lru import LruCache
from structome.storage.plddt import FRACTION_COLUMNS
from structome.storage.reader import lookup_spellings

logger = logging.getLogger(__name__)

# Files AFDB offers that are rendered from a stored one on request: stored kind -> (API field, stored name's
# suffix, the rendered file's suffix). The PAE plot from the PAE JSON, the PDB-format model from the mmCIF.
DERIVED_KINDS = {FileKind.PAE: ("paeImageUrl", ".json", ".png"), FileKind.CIF: ("pdbUrl", ".cif", ".pdb")}
# The API field of each stored kind's URL.
URL_FIELDS = {FileKind.CIF: "cifUrl", FileKind.PAE: "paeDocUrl", FileKind.CONFIDENCE: "plddtDocUrl"}

# entries columns served as they are (AlphaFold DB API names), in the order AFDB lists them.
ENTRY_COLUMNS = (
    "entryId", "gene", "sequenceChecksum", "uniprotAccession", "uniprotId", "uniprotDescription", "taxId",
    "organismScientificName", "uniprotStart", "uniprotEnd", "uniprotSequence", "modelCreatedDate", "latestVersion",
    "globalMetricValue", *FRACTION_COLUMNS, "ptm", "sequenceMd5", "model", "modelVersion", "untrained", "fragment",
)  # fmt: skip
SEARCHED = ("uniprotAccession", "entryId", "uniprotId", "gene", "organismScientificName", "uniprotDescription")
EXACT = ("gene", "uniprotId")  # besides the accession, an exact match (any case) on these ranks first
SEARCH_COUNT_CAP = 1000  # a search counts matching entries up to this many, then says "more than"
SEARCH_BUDGET_S = 0.4  # the substring part of a search stops after this long
# What a search result shows of an entry (API names); its length is the whole sequence's (max uniprotEnd).
SEARCH_COLUMNS = (
    "uniprotAccession", "entryId", "fragment", "uniprotDescription", "gene", "organismScientificName",
    "globalMetricValue", "untrained", "uniprotEnd",
)  # fmt: skip
# The entryId of a stored file's name (storage.afdb_json.entry_file_names): <entryId>-<stem>_v<k>.<suffix>.
_FILE_NAME = re.compile(r"(?P<entry>.+)-(?:model|predicted_aligned_error|confidence)_v\d+\.[a-z]+")
_VIEWS = ("entries", "files")  # the views an index queries
KEYS = {"entries": ("entryId", "uniprotAccession"), "files": ("entryId",)}  # what each table is looked up by
_URL_COLUMNS = ("entryId", "kind", "fileName")  # what an API answer shows of the files table
_CACHE_BYTES = 64 << 20  # ready answers kept per snapshot


@dataclass(frozen=True, slots=True)
class DerivedFile:
    """A file rendered on request from a stored one."""

    source: FileLocation
    suffix: str  # ".png" or ".pdb"

    @property
    def file_name(self) -> str:
        return self.source.file_name.removesuffix(DERIVED_KINDS[self.source.kind][1]) + self.suffix


@dataclass(frozen=True)
class SearchResults:
    """What a text search found: the first records (one per accession) and how many accessions matched."""

    records: list[dict]  # per shown accession, its first fragment's SEARCH_COLUMNS (API names) + sequenceLength
    total: int  # accessions matched; a lower bound unless `counted_all`
    counted_all: bool  # False: counting stopped (at SEARCH_COUNT_CAP matching entries, or out of time)
    scanned_all: bool  # False: the substring scan ran out of time; only key matches are in `total`


class EntryIndex:
    """Entries by accession and entryId, files by name, and text search over one snapshot of the views.

    `connection`: a DuckDB connection with `entries` and `files` views (or tables) for search; `tables`: the same
    tables' files for lookups by KEYS. The index owns the connection.
    """

    def __init__(
        self,
        connection: duckdb.DuckDBPyConnection,
        tables: dict[str, SortedTable],
        cache_bytes: int = _CACHE_BYTES,
    ):
        _share_views(connection)
        self._entries, self._files_table = tables["entries"], tables["files"]
        # Parquet footers parsed once per snapshot, not per lookup (a new snapshot starts a new database).
        connection.execute("SET GLOBAL parquet_metadata_cache = true")
        self._connection = connection
        self._settings = _session_settings(connection)
        self._local = threading.local()
        self._cursors: list[duckdb.DuckDBPyConnection] = []
        self._lock = threading.Lock()
        self._answers = LruCache(cache_bytes, lambda answer: 64 + (len(answer) if answer else 0))
        self._files = LruCache(cache_bytes // 8, lambda _: 512)
        self.search_budget_s = SEARCH_BUDGET_S

    @classmethod
    def load(cls, layout: DatabaseLayout) -> EntryIndex:
        """A snapshot of what is committed now (holding no lock on catalog.duckdb, which a build may refresh)."""
        visible = layout.visible_parts(schema.TABLE_NAMES)  # one listing for the lookups and the search views
        tables = {
            table: SortedTable(layout.fs, [layout.path(f.path) for f in visible[table]], KEYS[table])
            for table in _VIEWS
        }
        index = cls(catalog.connect_detached(layout, visible), tables)
        logger.info("index of %s opened", layout.location)
        return index

    def close(self) -> None:
        with self._lock:
            for cursor in self._cursors:
                cursor.close()
            self._cursors.clear()
        self._connection.close()

    def __len__(self) -> int:
        """Entries in the snapshot (from the footers)."""
        return self._entries.num_rows

    # --- the AFDB API

    def prediction_json(self, identifier: str) -> bytes | None:
        """The AFDB API answer (a JSON list) for an accession or an entryId, as given or upper-cased; None when
        unknown."""
        for spelling in lookup_spellings(identifier):
            answer = self._prediction_json(spelling)
            if answer is not None:
                return answer
        return None

    def _prediction_json(self, identifier: str) -> bytes | None:
        answer = self._answers.get(identifier)
        if answer is _MISS:
            records = self._records_of(identifier)
            answer = json.dumps(records).encode() if records else None
            self._answers.put(identifier, answer)
        return answer

    def predictions(self, identifier: str) -> list[dict]:
        answer = self.prediction_json(identifier)
        return json.loads(answer) if answer else []

    def _records_of(self, identifier: str) -> list[dict]:
        """The API records of an accession, else of the accession of an entryId (fragment order)."""
        rows = self._entries.rows("uniprotAccession", identifier, columns=ENTRY_COLUMNS)
        if not rows:
            owner = self._entries.rows("entryId", identifier, columns=("uniprotAccession",))
            rows = (
                self._entries.rows("uniprotAccession", owner[0]["uniprotAccession"], columns=ENTRY_COLUMNS)
                if owner
                else []
            )
        return self._api_records(rows)

    def _api_records(self, rows: list[dict]) -> list[dict]:
        """Rows of entries as the API gives them, with their files' URLs, by (accession, fragment, entryId)."""
        if not rows:
            return []
        entry_ids = sorted(r["entryId"] for r in rows)
        found = self._files_table.rows("entryId", entry_ids[0], entry_ids[-1], _URL_COLUMNS)
        urls = _file_urls(found, set(entry_ids))
        rows.sort(key=lambda r: (r["uniprotAccession"], r["fragment"], r["entryId"]))
        return [_api_record(r, urls.get(r["entryId"], {})) for r in rows]

    # --- files

    def stored_file(self, name: str) -> FileLocation | None:
        """Where the stored file of this name lies; None when there is none."""
        location = self._files.get(name)
        if location is _MISS:
            location = self._find_file(name)
            self._files.put(name, location)
        return location

    def derived_file(self, name: str) -> DerivedFile | None:
        """The file rendered on request under this name (a .png or .pdb beside a stored file); None if none."""
        for kind, (_, stored_suffix, suffix) in DERIVED_KINDS.items():
            if name.endswith(suffix):
                source = self.stored_file(name.removesuffix(suffix) + stored_suffix)
                if source is not None and source.kind == kind:
                    return DerivedFile(source, suffix)
        return None

    def _find_file(self, name: str) -> FileLocation | None:
        match = _FILE_NAME.fullmatch(name)
        if match is None:
            return None
        rows = [
            row
            for row in self._files_table.rows("entryId", match["entry"], columns=FILE_COLUMNS)
            if row["fileName"] == name
        ]
        return FileLocation.from_row(rows[0]) if rows else None

    # --- search

    def search(self, text: str, limit: int = 50) -> SearchResults:
        """Entries whose accession, entry id, name, gene, organism or description contains `text` (any case),
        one record per accession, in this order: exact accession, gene or entry-name matches; accessions and
        entry ids that start with the text; the other matches in entryId order.

        The first two kinds are range queries on the sorted keys. The substring part scans the six columns;
        it stops at SEARCH_COUNT_CAP matching entries or after `self.search_budget_s` seconds (a full scan of
        10M entries takes longer), and `SearchResults` says so.
        """
        needle = text.strip().lower()
        if not needle:
            return SearchResults([], 0, True, True)
        key = needle.upper()
        exact = self._key_matches("uniprotAccession", key)
        prefixed = [*self._key_matches("uniprotAccession", key, _after_prefix(key))]
        prefixed += self._key_matches("entryId", key, _after_prefix(key))
        found = self._substring_matches(needle)
        scanned_all = found is not None
        found = found or []
        exact += [accession for accession, is_exact in found if is_exact]
        hits = list(dict.fromkeys([*exact, *prefixed, *(accession for accession, _ in found)]))
        return SearchResults(
            self._search_records(hits[:limit]), len(hits), scanned_all and len(found) <= SEARCH_COUNT_CAP, scanned_all
        )

    def _key_matches(self, column: str, low: str, high: str | None = None) -> list[str]:
        """Accessions of the entries whose sorted key `column` lies in [low, high) (equals `low` without high)."""
        condition = f'"{column}" = $low' if high is None else f'"{column}" >= $low AND "{column}" < $high'
        rows = self._query(
            f"SELECT DISTINCT uniprotAccession FROM entries WHERE {condition} ORDER BY 1 LIMIT {SEARCH_COUNT_CAP + 1}",
            {"low": low} if high is None else {"low": low, "high": high},
        )
        return [row[0] for row in rows]

    def _substring_matches(self, needle: str) -> list[tuple[str, bool]] | None:
        """(accession, exact gene or name match) of the first entries (entryId order) whose searched columns
        contain the needle, up to SEARCH_COUNT_CAP + 1; None when the scan ran out of time."""
        contains = " OR ".join(f'contains(lower("{c}"), $needle)' for c in SEARCHED)
        exact = " OR ".join(f'lower("{c}") = $needle' for c in EXACT)
        sql = (
            f"SELECT uniprotAccession, coalesce({exact}, false) FROM entries WHERE {contains} "
            f"LIMIT {SEARCH_COUNT_CAP + 1}"
        )
        cursor = self._cursor()
        timer = threading.Timer(self.search_budget_s, cursor.interrupt)
        timer.start()
        try:
            return cursor.execute(sql, {"needle": needle}).fetchall()
        except duckdb.InterruptException:
            logger.info("search for %r stopped after %.1f s", needle, self.search_budget_s)
            return None
        finally:
            timer.cancel()
            timer.join()  # an interrupt already under way lands before the cursor's next query

    def _search_records(self, accessions: list[str]) -> list[dict]:
        """The first fragment of each accession, in the API's names, with the whole sequence's length."""
        if not accessions:
            return []
        rows = self._rows(
            f"SELECT {', '.join(SEARCH_COLUMNS)} FROM entries WHERE uniprotAccession IN ({', '.join('?' * len(accessions))})",
            accessions,
        )
        rows.sort(key=lambda r: (r["fragment"], r["entryId"]))
        first: dict[str, dict] = {}
        for row in rows:
            record = first.setdefault(row["uniprotAccession"], {**row, "sequenceLength": row["uniprotEnd"]})
            record["sequenceLength"] = max(record["sequenceLength"], row["uniprotEnd"])
        return [_search_record(first[a]) for a in accessions if a in first]

    # --- queries

    def _cursor(self) -> duckdb.DuckDBPyConnection:
        """This thread's cursor on the snapshot (its own DuckDB connection to the same in-memory database)."""
        cursor = getattr(self._local, "cursor", None)
        if cursor is None:
            cursor = self._connection.cursor()
            for name, value in self._settings.items():
                cursor.execute(f"SET {name} = $value", {"value": value})
            with self._lock:
                self._cursors.append(cursor)
            self._local.cursor = cursor
        return cursor

    def _query(self, sql: str, parameters: list | dict | None = None) -> list[tuple]:
        return self._cursor().execute(sql, parameters).fetchall()

    def _rows(self, sql: str, parameters: list) -> list[dict]:
        return self._cursor().sql(sql, params=parameters).to_arrow_table().to_pylist()


def visible_state(layout: DatabaseLayout) -> Hashable:
    """What changes whenever what the database shows changes: for a local database the catalog file's mtime
    and size (every change of what is visible rewrites catalog.duckdb); for an object store, the committed
    shards and the files under tables/ (the compaction manifests)."""
    if layout.is_local:
        stat = layout.catalog.stat()
        return stat.st_mtime_ns, stat.st_size
    return tuple(sorted(layout.committed_shards().items())), tuple(layout.list_files("tables"))


def _share_views(connection: duckdb.DuckDBPyConnection) -> None:
    """Recreate the index's temporary views (visible to their own connection only) in the in-memory database
    itself, so that the connection's cursors see them too."""
    views = connection.execute(
        "SELECT view_name, sql FROM duckdb_views() WHERE temporary AND list_contains($names, view_name)",
        {"names": list(_VIEWS)},
    ).fetchall()
    for name, sql in views:
        prefix = f"CREATE TEMP VIEW {name} AS "
        if not sql.startswith(prefix):
            raise ValueError(f"unexpected definition of view {name}: {sql[:80]!r}")
        connection.execute(f"CREATE OR REPLACE VIEW main.{name} AS {sql.removeprefix(prefix)}")


def _session_settings(connection: duckdb.DuckDBPyConnection) -> dict[str, str]:
    """The connection's session settings that its cursors need too (a local catalog's relative file paths)."""
    [(search_path,)] = connection.execute("SELECT current_setting('file_search_path')").fetchall()
    return {"file_search_path": search_path} if search_path else {}


def _after_prefix(prefix: str) -> str:
    """The least string after every string that starts with `prefix`."""
    return prefix[:-1] + chr(ord(prefix[-1]) + 1)


def _search_record(row: dict) -> dict:
    record = {c: row[c] for c in SEARCH_COLUMNS if c not in ("fragment", "uniprotEnd")}
    record.update(globalMetricValue=_rounded(row["globalMetricValue"]), sequenceLength=row["sequenceLength"])
    return record


def _file_urls(rows: list[dict], entry_ids: set[str]) -> dict[str, dict[str, str]]:
    """entryId -> the API's URL fields of its stored and derived files, in URL_FIELDS' kind order (the order a
    shard's files are written in), from files rows of _URL_COLUMNS; rows of other entries are ignored."""
    urls: dict[str, dict[str, str]] = defaultdict(dict)
    kinds = list(URL_FIELDS)
    files = [(row["entryId"], FileKind(row["kind"]), row["fileName"]) for row in rows if row["entryId"] in entry_ids]
    for entry_id, kind, file_name in sorted(files, key=lambda f: (f[0], kinds.index(f[1]))):
        urls[entry_id][URL_FIELDS[kind]] = f"/files/{file_name}"
        if kind in DERIVED_KINDS:
            field, stored_suffix, suffix = DERIVED_KINDS[kind]
            urls[entry_id][field] = f"/files/{file_name.removesuffix(stored_suffix)}{suffix}"
    return urls


def _api_record(record: dict, urls: dict[str, str]) -> dict:
    """An entries row as AlphaFold DB's /api/prediction shows it (both its older and newer field names)."""
    start, end = record["uniprotStart"], record["uniprotEnd"]
    api = {c: record[c] for c in ENTRY_COLUMNS if c not in ("fragment",)}
    api.update(
        modelCreatedDate=record["modelCreatedDate"].isoformat() if record["modelCreatedDate"] else None,
        allVersions=[record["latestVersion"]],
        sequence=(record["uniprotSequence"] or "")[start - 1 : end],
        sequenceStart=start,
        sequenceEnd=end,
        globalMetricValue=_rounded(record["globalMetricValue"]),
        **{c: _rounded(record[c], 3) for c in (*FRACTION_COLUMNS, "ptm")},
        **urls,
    )
    return api


def _rounded(value: float | None, digits: int = 2) -> float | None:
    return None if value is None else round(value, digits)
