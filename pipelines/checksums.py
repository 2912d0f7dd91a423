"""Sequence checksums: UniProt CRC64 (one at a time or numpy-batched) and MD5.

The UniProt CRC64 (SWISS-PROT / ISO 3309 polynomial x^64 + x^4 + x^3 + x + 1) is a reflected CRC with
initial value 0 and no final XOR. Bio.SeqUtils.CheckSum.crc64 computes it in two 32-bit halves; one uint64
register with the reflected polynomial 0xD800000000000000 gives the same bits (the low half of every table
entry is zero). As text: 16 upper-case hex digits, leading zeros kept (P41068: 0197355516942160).

`crc64_many` is "slicing-by-8" vectorised over sequences: each numpy step consumes 8 bytes of every
sequence in a block. Sequences are left-padded with NUL bytes to the block width; with initial value 0
leading zero bytes leave the register at 0, so padding needs no masking.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence

import numpy as np

logger = logging.getLogger(__name__)

_POLY = 0xD800000000000000  # reflected CRC-64-ISO polynomial
_BLOCK_BYTES = 1 << 24  # padded bytes per block at most (16 MiB)
_BLOCK_ROWS = 4096  # sequences per block at most
_BLOCK_FILL = 0.75  # a block ends before a sequence shorter than this fraction of its width


def _byte_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ _POLY if crc & 1 else crc >> 1
        table.append(crc)
    return table


def _slice8_tables(table: list[int]) -> np.ndarray:
    """[8 * 256] uint64: entry j*256 + v advances byte v found at offset j of a word through the word's end."""
    tables = [table]
    for _ in range(7):
        tables.append([(value >> 8) ^ table[value & 0xFF] for value in tables[-1]])
    return np.array([tables[7 - j][v] for j in range(8) for v in range(256)], dtype=np.uint64)


_TABLE = _byte_table()
_TABLE8 = _slice8_tables(_TABLE)
_OFFSETS8 = (np.arange(8, dtype=np.intp) * 256)[:, None]  # [8, 1]


def _encode(sequence: str) -> bytes:
    """Sequences are ASCII; anything else raises UnicodeEncodeError (a ValueError)."""
    return sequence.encode("ascii")


def crc64_int(sequence: str) -> int:
    """UniProt CRC64 of one sequence as an integer (pure Python)."""
    crc = 0
    table = _TABLE
    for byte in _encode(sequence):
        crc = (crc >> 8) ^ table[(crc ^ byte) & 0xFF]
    return crc


def crc64_hex(sequence: str) -> str:
    """UniProt CRC64 of one sequence: 16 upper-case hex digits, no "CRC-" prefix."""
    return f"{crc64_int(sequence):016X}"


def md5_hex(sequence: str) -> str:
    """MD5 hex digest (32 lower-case digits) of the ASCII sequence."""
    return hashlib.md5(_encode(sequence)).hexdigest()


def crc64_many(sequences: Sequence[str]) -> list[str]:
    """UniProt CRC64 of many sequences at once; same order and values as `crc64_hex`."""
    if not sequences:
        return []
    lengths = np.fromiter((len(s) for s in sequences), dtype=np.int64, count=len(sequences))
    order = np.argsort(-lengths, kind="stable")  # longest first, so blocks hold similar lengths
    result = np.zeros(len(sequences), dtype=np.uint64)
    for block in _blocks(lengths[order]):
        rows = order[block]
        width = -(-int(lengths[rows[0]]) // 8) * 8  # bytes, a multiple of 8
        if width:
            result[rows] = _crc64_block([sequences[i] for i in rows.tolist()], width)
    return [f"{value:016X}" for value in result.tolist()]


def _blocks(sorted_lengths: np.ndarray) -> list[slice]:
    """Cut lengths sorted in decreasing order into blocks of similar length (little padding)."""
    blocks, start, n = [], 0, len(sorted_lengths)
    while start < n:
        width = max(int(sorted_lengths[start]), 1)
        stop = min(n, start + min(_BLOCK_ROWS, max(1, _BLOCK_BYTES // width)))
        # the block ends before the first sequence (after its first) shorter than the fill threshold
        short = np.flatnonzero(sorted_lengths[start + 1 : stop] < _BLOCK_FILL * width)
        stop = start + 1 + int(short[0]) if len(short) else stop
        blocks.append(slice(start, stop))
        start = stop
    return blocks


def _crc64_block(block: list[str], width: int) -> np.ndarray:
    """CRC64 of sequences no longer than `width` (a multiple of 8), 8 bytes of each per step."""
    rows = len(block)
    padded = _encode("".join(s.rjust(width, "\0") for s in block))
    words = np.frombuffer(padded, dtype="<u8").reshape(rows, width // 8).T.copy()  # [width/8, rows]
    crc = np.zeros(rows, dtype=np.uint64)
    crc_bytes = crc.view(np.uint8).reshape(rows, 8).T  # [8, rows], little-endian: byte 0 first
    index = np.empty((8, rows), dtype=np.intp)
    looked_up = np.empty((8, rows), dtype=np.uint64)
    for word in words:
        np.bitwise_xor(crc, word, out=crc)
        np.add(crc_bytes, _OFFSETS8, out=index)
        _TABLE8.take(index, out=looked_up, mode="clip")  # "clip": no buffered bounds check
        np.bitwise_xor.reduce(looked_up, axis=0, out=crc)
    return crc
