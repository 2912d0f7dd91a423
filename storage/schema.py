"""The one place the Parquet and DuckDB schema lives.

Column names of `entries` follow the AlphaFold DB BigQuery table (entryId, uniprotAccession, ...); ours
are added beside them. Per-residue values live in `residues`, never in `entries`, so a point lookup on
`entries` reads lean columns only.

The Arrow schemas are built on first use (module `__getattr__`), not on import: pyarrow costs ~165 ms to import,
and `structome get` and `structome sql` need only the table names (TABLE_NAMES).
"""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING

from structome.storage.plddt import FRACTION_COLUMNS

if TYPE_CHECKING:
    import pyarrow as pa

TABLE_NAMES = ("entries", "residues", "files", "failures", "builds")  # the keys of TABLES, in its order

# Built by _arrow_schemas on first access.
ENTRIES: pa.Schema
RESIDUES: pa.Schema
FILES: pa.Schema
FAILURES: pa.Schema
BUILDS: pa.Schema
TABLES: dict[str, pa.Schema]  # table name -> schema


def __getattr__(name: str) -> pa.Schema | dict[str, pa.Schema]:
    schemas = _arrow_schemas()
    if name not in schemas:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return schemas[name]


@cache
def _arrow_schemas() -> dict:
    """Every module-level schema name -> its value, built once."""
    import pyarrow as pa

    ENTRIES = pa.schema(
        [
            ("entryId", pa.string()),
            ("uniprotAccession", pa.string()),
            ("uniprotId", pa.string()),  # UniProt entry name, e.g. TRAP_ECOLI
            ("uniprotDescription", pa.string()),
            ("gene", pa.string()),
            ("taxId", pa.int64()),
            ("organismScientificName", pa.string()),
            ("uniprotStart", pa.int32()),  # 1-based first residue of the full sequence in this model
            ("uniprotEnd", pa.int32()),  # inclusive
            ("uniprotSequence", pa.string()),  # the whole input sequence, as written
            ("sequenceChecksum", pa.string()),  # UniProt CRC64, 16 upper-case hex digits
            ("sequenceMd5", pa.string()),  # MD5 of the whole sequence
            ("sequenceVersion", pa.int32()),
            ("sourceDatabase", pa.string()),  # sp, tr, or empty for non-UniProt headers
            ("fragment", pa.int32()),  # the n of -F<n>
            ("globalMetricValue", pa.float32()),  # mean pLDDT, 0-100
            *((column, pa.float32()) for column in FRACTION_COLUMNS),  # share of residues per pLDDT band
            ("ptm", pa.float32()),
            ("predictionId", pa.string()),  # content address shared by entries with the same fragment sequence
            ("model", pa.string()),
            ("modelVersion", pa.string()),
            ("untrained", pa.bool_()),
            ("latestVersion", pa.int32()),  # the v<k> of the file names
            ("modelCreatedDate", pa.date32()),
            ("build", pa.string()),
            ("recordId", pa.string()),
            ("recordNumber", pa.int32()),  # 1-based position of the record in its file
            ("sourceFile", pa.string()),
            ("shard", pa.string()),
        ]
    )

    RESIDUES = pa.schema(
        [
            ("entryId", pa.string()),
            ("residueNumber", pa.int32()),  # 1-based position in the model (label_seq_id)
            ("uniprotResidueNumber", pa.int32()),  # position in the full sequence
            ("residue", pa.string()),  # one letter, as written in the input
            ("pLDDT", pa.float32()),  # 0-100
        ]
    )

    # Where each stored file sits: one ranged read of `archive` at [offset, offset + length).
    FILES = pa.schema(
        [
            ("entryId", pa.string()),
            ("kind", pa.string()),  # cif, pae, confidence
            ("fileName", pa.string()),  # AFDB-style name, e.g. SM-P12345-F1-model_v1.cif
            ("archive", pa.string()),  # path relative to the database folder
            ("member", pa.string()),  # member name inside the archive (fileName + .gz when gzip)
            ("offset", pa.int64()),  # byte offset of the stored bytes in the archive
            ("length", pa.int64()),  # stored byte count
            ("encoding", pa.string()),  # gzip or identity
            ("size", pa.int64()),  # byte count once decoded
            ("sha256", pa.string()),  # of the stored bytes
        ]
    )

    FAILURES = pa.schema(
        [
            ("recordId", pa.string()),
            ("recordNumber", pa.int32()),  # 1-based position of the record in its file (ids may repeat)
            ("sourceFile", pa.string()),  # the input's absolute path (two inputs of one name never merge)
            ("entryId", pa.string()),  # empty when the record never became an entry
            ("reason", pa.string()),  # short code
            ("message", pa.string()),
            ("stage", pa.string()),  # ingest, predict or write
            ("build", pa.string()),
            (
                "uniprotAccession",
                pa.string(),
            ),  # parsed from the header, as in entries; "" when it has none (last: added later)
        ]
    )

    BUILDS = pa.schema(
        [
            ("build", pa.string()),
            ("status", pa.string()),  # running, completed, failed
            ("startedAt", pa.timestamp("s", tz="UTC")),
            ("finishedAt", pa.timestamp("s", tz="UTC")),
            ("wallSeconds", pa.float64()),
            ("inputs", pa.list_(pa.string())),
            ("model", pa.string()),
            ("modelVersion", pa.string()),
            ("weights", pa.string()),
            ("weightsSha256", pa.string()),
            ("untrained", pa.bool_()),
            ("precision", pa.string()),
            ("numRecycles", pa.int32()),
            ("chunkSize", pa.int32()),
            ("libraryVersions", pa.string()),  # JSON object
            ("settings", pa.string()),  # JSON object: ingest and batching settings
            ("records", pa.int64()),  # FASTA records read
            ("entriesPlanned", pa.int64()),  # entries this build had to write
            ("entriesSkipped", pa.int64()),  # already in the database (resume)
            ("entriesWritten", pa.int64()),
            ("predictions", pa.int64()),  # unique sequences folded
            ("residues", pa.int64()),
            ("failures", pa.int64()),
            ("shards", pa.int64()),
            ("structomeVersion", pa.string()),
        ]
    )

    TABLES = dict(zip(TABLE_NAMES, (ENTRIES, RESIDUES, FILES, FAILURES, BUILDS), strict=True))
    return dict(ENTRIES=ENTRIES, RESIDUES=RESIDUES, FILES=FILES, FAILURES=FAILURES, BUILDS=BUILDS, TABLES=TABLES)


def integer_bounds(table: pa.Schema, column: str) -> tuple[int, int]:
    """The smallest and largest value an integer column of `table` can hold (what ingest checks header numbers
    against, so no record reaches a shard writer with a number its column cannot store)."""
    import pyarrow as pa

    kind = table.field(column).type
    if not pa.types.is_integer(kind):
        raise TypeError(f"{column} is {kind}, not an integer column")
    bits = kind.bit_width
    return (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if pa.types.is_signed_integer(kind) else (0, 2**bits - 1)
