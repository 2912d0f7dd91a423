"""Point reads of a table sorted by a key: the few row groups whose key range holds the key, read with pyarrow.

A compacted segment is sorted by its key (storage.segments.SORT_KEYS) in row groups of a few thousand rows
(storage.compaction.ROW_GROUP_ROWS); a committed shard that no segment covers yet is one small file in any order.
A `SortedTable` keeps, for every row group of its files, the min and max of its key columns from the Parquet
footers' statistics (about 2,500 ranges per key at 10M entries, nothing per entry). A lookup bisects those ranges,
reads the wanted columns of the matching groups only and filters them: no SQL planning, no view, no read of any
other group. A file without a column reads it as null (like the catalog's `union_by_name` views).
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

__all__ = ["SortedTable", "key_ranges"]

# A string maximum this long may be a truncated one (a writer's statistics limit): no upper bound then.
_TRUNCATED = 64


@dataclass(frozen=True)
class _File:
    path: str
    metadata: pq.FileMetaData
    columns: frozenset[str]


class _KeyRanges:
    """The row groups (file, group) of one key column by their [low, high] range, sorted by low; `reach[i]` is
    the highest high among the first i + 1, so a lookup walks back from the bisection point only while a group
    can still hold the key: O(log n + groups found) on sorted, disjoint ranges."""

    def __init__(self, ranges: Iterable[tuple[str, str, int, int]]):
        ordered = sorted(ranges)
        self.lows = [r[0] for r in ordered]
        self.highs = [r[1] for r in ordered]
        self.groups = [(r[2], r[3]) for r in ordered]
        self.reach: list[str] = []
        for high in self.highs:
            self.reach.append(max(high, self.reach[-1]) if self.reach else high)

    def holding(self, low: str, high: str) -> list[tuple[int, int]]:
        found = []
        i = bisect.bisect_right(self.lows, high) - 1
        while i >= 0 and self.reach[i] >= low:
            if self.highs[i] >= low:
                found.append(self.groups[i])
            i -= 1
        return found


class SortedTable:
    """The Parquet files of one table (paths on `fs`), located by the ranges of `keys` (string columns)."""

    def __init__(self, fs: pafs.FileSystem, paths: Sequence[str], keys: Sequence[str]):
        self.fs = fs
        self.files = [_open(fs, path) for path in paths]
        self._ranges: dict[str, _KeyRanges] = {}
        self._unbounded: dict[str, list[tuple[int, int]]] = {}  # groups without usable statistics: always read
        for key in keys:
            ranges, unbounded = [], []
            for number, file in enumerate(self.files):
                for group, bounds in enumerate(_bounds(file, key)):
                    if bounds is None:
                        unbounded.append((number, group))
                    elif bounds != ():
                        ranges.append((*bounds, number, group))
            self._ranges[key], self._unbounded[key] = _KeyRanges(ranges), unbounded

    @property
    def num_rows(self) -> int:
        return sum(file.metadata.num_rows for file in self.files)

    @property
    def row_groups(self) -> int:
        return sum(file.metadata.num_row_groups for file in self.files)

    def rows(self, key: str, low: str, high: str | None = None, columns: Sequence[str] = ()) -> list[dict]:
        """The rows (dicts of `columns`; a file's missing column is None) whose `key` lies in [low, high]
        (equals `low` without high), in file and row-group order."""
        high = low if high is None else high
        groups = sorted({*self._ranges[key].holding(low, high), *self._unbounded[key]})
        found: list[dict] = []
        for number, group in groups:
            found += self._read(self.files[number], group, key, low, high, columns)
        return found

    def _read(self, file: _File, group: int, key: str, low: str, high: str, columns: Sequence[str]) -> list[dict]:
        if key not in file.columns:
            return []
        present = [c for c in dict.fromkeys([key, *columns]) if c in file.columns]
        with self.fs.open_input_file(file.path) as handle:
            reader = pq.ParquetFile(handle, metadata=file.metadata)
            # The key column first: overlapping segments put the key in the range of one group of each, and
            # mostly only one holds it; the other columns (the sequence is 90% of a group) only for that one.
            hits = _matching_rows(reader.read_row_group(group, columns=[key]).column(key), low, high)
            if not hits:
                return []
            table = reader.read_row_group(group, columns=present)
        wanted = [table.slice(i, 1) for i in hits]
        rows = [row for part in wanted for row in part.select([c for c in present if c in columns]).to_pylist()]
        missing = [c for c in columns if c not in file.columns]
        if missing:
            for row in rows:
                row.update(dict.fromkeys(missing))
        return rows


def _matching_rows(keys: pa.ChunkedArray, low: str, high: str) -> list[int]:
    """The rows whose key lies in [low, high]. An equality lookup first looks for the key's bytes in the column's
    string data (C speed; no false negatives) and decodes the column only where they occur: most groups a lookup
    reads (one per overlapping segment) do not hold the key. No pyarrow.compute: its first call imports pandas."""
    if low == high and keys.type == pa.string():
        data = b"".join(chunk.buffers()[2].to_pybytes() for chunk in keys.chunks if chunk.buffers()[2] is not None)
        if low.encode() not in data:
            return []
    return [i for i, value in enumerate(keys.to_pylist()) if value is not None and low <= value <= high]


def _open(fs: pafs.FileSystem, path: str) -> _File:
    with fs.open_input_file(path) as handle:
        metadata = pq.ParquetFile(handle).metadata
    return _File(path, metadata, frozenset(metadata.schema.names))  # flat tables: one leaf per column


def _bounds(file: _File, key: str) -> list[tuple[str, str] | tuple[()] | None]:
    """Per row group of the file: (min, max) of `key`; () for a group without rows; None when unknown."""
    metadata = file.metadata
    if key not in file.columns:
        return [()] * metadata.num_row_groups
    column = metadata.schema.names.index(key)
    bounds: list[tuple[str, str] | tuple[()] | None] = []
    for group in range(metadata.num_row_groups):
        chunk = metadata.row_group(group)
        statistics = chunk.column(column).statistics
        if chunk.num_rows == 0:
            bounds.append(())
        elif statistics is None or not statistics.has_min_max or not isinstance(statistics.max, str):
            bounds.append(None)
        elif statistics.null_count == chunk.num_rows:
            bounds.append(())  # only nulls: no key to find
        elif len(statistics.max) >= _TRUNCATED:
            bounds.append(None)
        else:
            bounds.append((statistics.min, statistics.max))
    return bounds


def key_ranges(path: str, metadata: pq.FileMetaData, keys: Iterable[str]) -> dict[str, tuple[str, str]]:
    """The [min, max] of each key column over a file's rows, from its footer's statistics. A key is left out
    where some row group's values are unknown (no usable statistics) or the file holds none."""
    file = _File(path, metadata, frozenset(metadata.schema.names))
    ranges = {}
    for key in keys:
        bounds = [b for b in _bounds(file, key) if b != ()]
        known = [b for b in bounds if b is not None and len(b) == 2]
        if known and len(known) == len(bounds):
            ranges[key] = (min(low for low, _ in known), max(high for _, high in known))
    return ranges
