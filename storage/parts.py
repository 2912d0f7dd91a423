"""The Parquet files of a segment's table ("parts"): how they are written, and their Bloom filters read back.

A part holds ROW_GROUPS_PER_PART row groups of sorted rows. Every row group carries min/max statistics of every
column and a split-block Bloom filter (the Parquet format's, xxHash64) of each key column a point lookup filters
on (storage.segments.PART_KEYS). Segments overlap in key range (an LSM tree keeps a few per tier), so a lookup
finds one row group per segment whose min/max admit the key; the Bloom filters rule out the groups that do not
hold it. DuckDB reads them itself (`structome sql`, `get`: it skips such groups); the server's pyarrow lookups
(storage.key_index) check them before decoding a group. At 10M entries (7 segments) that is
one group decoded per lookup instead of seven.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from structome.storage import schema
from structome.storage.key_index import key_ranges
from structome.storage.segments import PART_KEYS

__all__ = ["BLOOM_FPP", "DATA_PAGE_BYTES", "ROW_GROUPS_PER_PART", "ROW_GROUP_ROWS", "PartWriter"]

# Rows per Parquet row group: a point lookup reads one group of each column it returns, so groups stay small
# for the lean tables; residues (hundreds of rows per entry) take larger ones.
# Entries and files: one group decodes in ~1-3 ms (the server's lookups read one; benchmarks/bench_serve_index.py).
ROW_GROUP_ROWS = {"entries": 4_096, "residues": 131_072, "files": 8_192, "failures": 16_384}
# Small data pages: DuckDB decodes only the pages that hold a point query's rows (SQL lookups on long columns).
DATA_PAGE_BYTES = 16_384
# Row groups per part file of a segment (storage.segments): a cold point lookup parses one part's footer per
# segment (entries: 262k entries, ~1 MB of footer), whatever the segment's size.
ROW_GROUPS_PER_PART = 64
# False-positive rate of the key columns' Bloom filters: ~1.2 bytes per row (entries: 8 KB per group).
BLOOM_FPP = 0.01


class PartWriter:
    """Sorted rows of one table in, part files out: `write` batches in key order, then `close` gives each part's
    path and key ranges (storage.segments.SegmentFile's) in order; at least one part, empty if no row came."""

    def __init__(self, table: str, target: Callable[[int], Path]):
        self.table, self._target = table, target  # target(number) -> where part `number` is written
        self.schema = schema.TABLES[table]
        self.group_rows = ROW_GROUP_ROWS[table]
        self._pending: list[pa.Table] = []
        self._buffered = 0
        self._writer: pq.ParquetWriter | None = None
        self._groups = 0  # row groups in the open part
        self.parts: list[tuple[Path, dict[str, tuple[str, str]]]] = []
        self.rows = 0

    def write(self, rows: pa.Table | pa.RecordBatch) -> None:
        table = rows if isinstance(rows, pa.Table) else pa.Table.from_batches([rows])
        self._pending.append(table.select(self.schema.names).cast(self.schema))
        self._buffered += len(table)
        if self._buffered >= self.group_rows:
            merged = pa.concat_tables(self._pending)
            whole = len(merged) - len(merged) % self.group_rows
            for start in range(0, whole, self.group_rows):
                self._write_group(merged.slice(start, self.group_rows))
            self._pending, self._buffered = [merged.slice(whole)], len(merged) - whole

    def close(self) -> list[tuple[Path, dict[str, tuple[str, str]]]]:
        rest = pa.concat_tables([self.schema.empty_table(), *self._pending])
        if len(rest) or (not self.parts and self._writer is None):
            self._write_group(rest)
        self._close_part()
        return self.parts

    def _write_group(self, group: pa.Table) -> None:
        if self._writer is None:
            self.parts.append((self._target(len(self.parts)), {}))
            blooms = {key: {"ndv": self.group_rows, "fpp": BLOOM_FPP} for key in PART_KEYS[self.table]}
            self._writer = pq.ParquetWriter(
                self.parts[-1][0], self.schema, compression="zstd", data_page_size=DATA_PAGE_BYTES,
                bloom_filter_options=blooms or None,
            )  # fmt: skip
        self._writer.write_table(group, row_group_size=max(len(group), 1))
        self.rows += len(group)
        self._groups += 1
        if self._groups == ROW_GROUPS_PER_PART:
            self._close_part()

    def _close_part(self) -> None:
        if self._writer is None:
            return
        self._writer.close()
        self._writer, self._groups = None, 0
        path = self.parts[-1][0]
        self.parts[-1] = (path, key_ranges(str(path), pq.ParquetFile(path).metadata, PART_KEYS[self.table]))
