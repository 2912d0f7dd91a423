"""Point reads of a table sorted by a key: the few row groups whose key range holds the key, read with pyarrow.

A compacted segment is sorted by its key (storage.segments.SORT_KEYS) in row groups of a few thousand rows
(storage.parts.ROW_GROUP_ROWS); a committed shard that no segment covers yet is one small file in any order.
A `SortedTable` keeps, for every row group of its files, the min and max of its key columns from the Parquet
footers' statistics (about 2,500 ranges per key at 10M entries, nothing per entry). A lookup bisects those ranges,
reads the wanted columns of the matching groups only and filters them: no SQL planning, no view, no read of any
other group. Where a group's key column has a Bloom filter (segment parts: storage.parts), an equality lookup
checks it first and skips the group it rules out, and reads a group it holds in one pass (key and columns); a
range, or a group without a filter, reads its key column first. A file without a column reads it as null (like
the catalog's `union_by_name` views).
"""

from __future__ import annotations

import bisect
import struct
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import xxhash

__all__ = ["SortedTable", "key_ranges", "may_contain"]

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
        # pre_buffer coalesces a group's column reads into a few large requests issued on Arrow's I/O threads: what
        # an object store needs, a thread hop per read for a local file (~10% of a lookup, more on a loaded host).
        self._pre_buffer = not isinstance(fs, pafs.LocalFileSystem)
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
        others = [c for c in dict.fromkeys(columns) if c != key and c in file.columns]
        with self.fs.open_input_file(file.path) as handle:
            chunk = file.metadata.row_group(group).column(file.metadata.schema.names.index(key))
            filtered = low == high and chunk.bloom_filter_offset is not None
            if filtered and not may_contain(lambda offset, length: handle.read_at(length, offset), chunk, low):
                return []  # the group's Bloom filter (storage.parts): the key is not there
            reader = pq.ParquetFile(handle, metadata=file.metadata, pre_buffer=self._pre_buffer)
            if filtered:
                # The filter holds the key: it is there but for a false positive (storage.parts.BLOOM_FPP), so the
                # key and the other columns come in one read, each column chunk decoded once.
                table = reader.read_row_group(group, columns=[key, *others], use_threads=False)
                keys, hits = table.column(key), _matching_rows(table.column(key), low, high)
            else:
                # No filter, or a range: the key column first, which may find nothing here; the other columns
                # (the sequence is 90% of a group's bytes) are read only where the key is.
                keys = reader.read_row_group(group, columns=[key], use_threads=False).column(key)
                hits = _matching_rows(keys, low, high)
                if not hits:
                    return []
                table = reader.read_row_group(group, columns=others, use_threads=False) if others else None
        return _rows_at(keys, table, hits, key, columns)


def _rows_at(
    keys: pa.ChunkedArray, table: pa.Table | None, hits: list[int], key: str, columns: Sequence[str]
) -> list[dict]:
    """The rows `hits` as dicts of `columns`: the key from `keys`, the others from `table` (None where it lacks
    them). Only those rows become Python objects, each run of consecutive rows sliced once."""
    names = [c for c in dict.fromkeys([key, *columns]) if c in columns]
    rows: list[dict] = []
    for start, stop in _runs(hits):
        values = {key: keys.slice(start, stop - start).to_pylist()}
        if table is not None:
            values.update((c, table.column(c).slice(start, stop - start).to_pylist()) for c in table.column_names)
        rows += [{c: values[c][i] if c in values else None for c in names} for i in range(stop - start)]
    return rows


def _runs(hits: list[int]) -> list[tuple[int, int]]:
    """[start, stop) of each run of consecutive numbers in the ascending `hits`."""
    runs: list[tuple[int, int]] = []
    for hit in hits:
        if runs and runs[-1][1] == hit:
            runs[-1] = (runs[-1][0], hit + 1)
        else:
            runs.append((hit, hit + 1))
    return runs


def _matching_rows(keys: pa.ChunkedArray, low: str, high: str) -> list[int]:
    """The rows whose key lies in [low, high]. An equality lookup finds the key's bytes in the column's string
    data and maps each occurrence that is a whole value to its row through the offsets (C speed, nothing
    decoded); a range decodes the column. No pyarrow.compute: its first call imports pandas."""
    if low != high or keys.type != pa.string():
        return [i for i, value in enumerate(keys.to_pylist()) if value is not None and low <= value <= high]
    wanted, hits, base = low.encode(), [], 0
    for chunk in keys.chunks:
        _, offsets_buffer, data_buffer = chunk.buffers()
        if data_buffer is not None:
            offsets = np.frombuffer(offsets_buffer, np.int32, len(chunk) + 1, chunk.offset * 4)
            data = data_buffer.to_pybytes()
            at = data.find(wanted)
            while at >= 0:
                row = int(np.searchsorted(offsets, at))
                if (
                    row < len(chunk)
                    and offsets[row] == at
                    and offsets[row + 1] - at == len(wanted)
                    and chunk[row].is_valid
                ):
                    hits.append(base + row)
                at = data.find(wanted, at + 1)
        base += len(chunk)
    return hits


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


# --- Bloom filters (parquet-format BloomFilter.md: split-block, 256-bit blocks of eight 32-bit words)

_SALTS = (0x47B6137B, 0x44974D91, 0x8824AD5B, 0xA2B7289D, 0x705495C7, 0x2DF1424B, 0x9EFC4947, 0x5C6BFB31)
_HEADER_MAX = 64  # a BloomFilterHeader is a few bytes of Thrift


def may_contain(read: Callable[[int, int], bytes], chunk: pq.ColumnChunkMetaData, value: str) -> bool:
    """False only when the column chunk's Bloom filter proves `value` (a string) absent; True when it may be there
    or the chunk has no filter. `read(offset, length)` reads bytes of the chunk's file."""
    offset = chunk.bloom_filter_offset
    if offset is None:
        return True
    data = read(offset, chunk.bloom_filter_length or _HEADER_MAX)
    header = _bitset_start(data)
    if header is None:
        return True  # a header we do not understand: no pruning
    start, size = header
    if len(data) < start + size:
        data += read(offset + len(data), start + size - len(data))
    return _bitset_holds(memoryview(data)[start : start + size], xxhash.xxh64_intdigest(value.encode()))


def _bitset_holds(bitset: memoryview, digest: int) -> bool:
    blocks = len(bitset) // 32
    block = ((digest >> 32) * blocks) >> 32
    key = digest & 0xFFFFFFFF
    words = struct.unpack_from("<8I", bitset, block * 32)
    return all(word >> (((key * salt) & 0xFFFFFFFF) >> 27) & 1 for word, salt in zip(words, _SALTS, strict=True))


def _bitset_start(data: bytes) -> tuple[int, int] | None:
    """(where the bitset starts, its bytes) after the Thrift compact BloomFilterHeader at the start of `data`:
    field 1 numBytes (i32), then three structs holding one empty union member each (algorithm BLOCK, hash XXHASH,
    compression UNCOMPRESSED)."""
    position, size, depth = 0, None, 0
    while position < len(data):
        byte = data[position]
        position += 1
        kind = byte & 0x0F
        if kind == 0:  # stop: the end of a struct
            if depth == 0:
                return (position, size) if size else None
            depth -= 1
        elif kind == 5 and depth == 0 and size is None:  # i32 numBytes, zigzag varint
            raw, position = _varint(data, position)
            size = (raw >> 1) ^ -(raw & 1)
        elif kind == 12:
            depth += 1
        else:
            return None
    return None


def _varint(data: bytes, position: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        byte = data[position]
        position += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, position
        shift += 7
