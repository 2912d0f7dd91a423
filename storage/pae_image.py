"""AlphaFold DB's PAE image (`<entryId>-predicted_aligned_error_v<k>.png`): one pixel per residue pair.

Pixel (i, j) (row i = scored residue, column j = aligned residue, as in the PAE JSON) is coloured by
PAE[i][j] with matplotlib's "Greens_r", AlphaFold DB's PAE colour map: dark green (#00441b) at 0 Å,
near white (#f7fcf5) at the maximum error. The map is the ColorBrewer "Greens" ramp matplotlib is built
from, interpolated to 256 colours and looked up as matplotlib does (index = floor(256 * PAE / max), capped
at 255); colours are rounded to 8 bits (matplotlib truncates, so a channel may differ by one).

The PNG is written with numpy, zlib and struct only. Every pixel is one of the ramp's 256 colours, so it is
an indexed-colour PNG (colour type 3, 8-bit indices, a 256-entry PLTE): a third of the bytes of 8-bit RGB
for zlib to compress, the same picture. Rows use PNG's "Up" filter, which suits smooth PAE maps.
"""

from __future__ import annotations

import json
import struct
import zlib

import numpy as np

from structome.models.types import PAE_MAX

__all__ = ["GREENS_R", "pae_colour_indices", "pae_png", "pae_png_from_json", "read_pae_json"]

# ColorBrewer "Greens" (matplotlib's _Greens_data), reversed: 0 -> dark green, 1 -> near white.
_GREENS_R_STOPS = np.array(
    [
        [0x00, 0x44, 0x1B],
        [0x00, 0x6D, 0x2C],
        [0x23, 0x8B, 0x45],
        [0x41, 0xAB, 0x5D],
        [0x74, 0xC4, 0x76],
        [0xA1, 0xD9, 0x9B],
        [0xC7, 0xE9, 0xC0],
        [0xE5, 0xF5, 0xE0],
        [0xF7, 0xFC, 0xF5],
    ],
    dtype=np.float64,
)


def _ramp(stops: np.ndarray, n: int = 256) -> np.ndarray:
    """n colours linearly interpolated between evenly spaced stops: [n, 3] uint8."""
    where = np.linspace(0.0, 1.0, n)
    at = np.linspace(0.0, 1.0, len(stops))
    return np.stack([np.interp(where, at, stops[:, c]) for c in range(3)], axis=1).round().astype(np.uint8)


GREENS_R = _ramp(_GREENS_R_STOPS)  # [256, 3] RGB
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
ZLIB_LEVEL = 6


def pae_colour_indices(pae: np.ndarray, max_error: float = PAE_MAX) -> np.ndarray:
    """The colour-map index (0-255) of every PAE value (Å): [L, L] uint8."""
    values = np.asarray(pae)
    if values.ndim != 2 or values.shape[0] != values.shape[1] or values.shape[0] == 0:
        raise ValueError(f"PAE must be a non-empty square matrix, got shape {values.shape}")
    if not max_error > 0:
        raise ValueError(f"max_error must be positive, got {max_error}")
    scaled = values.astype(np.float32) * np.float32(len(GREENS_R) / max_error)
    if not np.isfinite(scaled).all():
        raise ValueError("PAE values must be finite")
    return np.clip(scaled, 0, len(GREENS_R) - 1).astype(np.uint8)


def pae_png(pae: np.ndarray, max_error: float = PAE_MAX, *, level: int = ZLIB_LEVEL) -> bytes:
    """The PAE heatmap ([L, L] Å) as PNG bytes, L x L pixels: dark green at 0 Å, near white at max_error."""
    indices = pae_colour_indices(pae, max_error)
    size = indices.shape[0]
    rows = np.empty((size, size + 1), np.uint8)
    rows[:, 0] = 2  # "Up": each byte minus the byte above it (modulo 256); the first row is kept as is
    rows[0, 1:] = indices[0]
    np.subtract(indices[1:], indices[:-1], out=rows[1:, 1:])
    header = struct.pack(">IIBBBBB", size, size, 8, 3, 0, 0, 0)  # 8-bit indexed colour, no interlace
    return b"".join(
        [
            PNG_SIGNATURE,
            _chunk(b"IHDR", header),
            _chunk(b"PLTE", GREENS_R.tobytes()),
            _chunk(b"IDAT", zlib.compress(rows.tobytes(), level)),
            _chunk(b"IEND", b""),
        ]
    )


def pae_png_from_json(data: bytes | str, *, level: int = ZLIB_LEVEL) -> bytes:
    """The PNG of a stored AFDB PAE JSON file (decoded bytes), with the file's own maximum error."""
    pae, max_error = read_pae_json(data)
    return pae_png(pae, max_error, level=level)


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


# ---- reading the PAE JSON -------------------------------------------------------------------------------

_KEY = b'"predicted_aligned_error"'
_MAX_DIGITS = 9  # longer integers are left to json (and are no PAE)


def read_pae_json(data: bytes | str) -> tuple[np.ndarray, float]:
    """The PAE matrix ([L, L]) and max_predicted_aligned_error of an AFDB PAE file.

    `[{"predicted_aligned_error": [[...], ...], "max_predicted_aligned_error": 31.75}]` (a bare object is
    accepted too). A minified integer matrix, as structome and AlphaFold DB v4 write it, is parsed with numpy
    (~4x faster than json at L = 1400); anything else goes through json.
    """
    raw = data.encode() if isinstance(data, str) else bytes(data)
    fast = _integer_matrix(raw)
    if fast is not None:
        pae, (start, end) = fast
        document = json.loads(raw[:start] + b"[]" + raw[end:])  # the rest of the file, checked by json
    else:
        document = json.loads(raw)
    record = document[0] if isinstance(document, list) and len(document) == 1 else document
    if not isinstance(record, dict) or "predicted_aligned_error" not in record:
        raise ValueError("not an AlphaFold DB PAE file (no predicted_aligned_error)")
    if fast is None:
        pae = np.asarray(record["predicted_aligned_error"], dtype=np.float32)
    max_error = record.get("max_predicted_aligned_error", PAE_MAX)
    if not isinstance(max_error, (int, float)):
        raise ValueError(f"max_predicted_aligned_error must be a number, got {max_error!r}")
    return pae, float(max_error)


def _integer_matrix(raw: bytes) -> tuple[np.ndarray, tuple[int, int]] | None:
    """The matrix value of the PAE key and its byte span, if it is a minified square integer matrix; else None."""
    key = raw.find(_KEY)
    start = raw.find(b"[", key + len(_KEY)) if key >= 0 else -1
    if start < 0 or raw[key + len(_KEY) : start].strip() != b":":
        return None
    end = raw.find(b"]]", start)
    if end < 0:
        return None
    body = np.frombuffer(raw, np.uint8, count=end + 2 - start, offset=start)
    separators = np.flatnonzero((body < ord("0")) | (body > ord("9")))
    structure = body[separators]
    size = int(np.count_nonzero(structure == ord("["))) - 1
    if size < 1:
        return None
    row = b"[" + b"," * (size - 1) + b"]"
    if structure.tobytes() != b"[" + b",".join([row] * size) + b"]":
        return None  # other characters (spaces, signs, decimals) or a ragged matrix
    gaps = np.diff(separators) - 1  # digits between neighbouring separators
    before, after = structure[:-1], structure[1:]
    slots = ((before == ord("[")) | (before == ord(","))) & ((after == ord(",")) | (after == ord("]")))
    if not np.array_equal(gaps > 0, slots) or gaps.max() > _MAX_DIGITS:
        return None  # an empty number, or digits between a row's ] and the next [
    lengths, ends = gaps[slots], separators[1:][slots]  # each number's digit count, and where it ends
    values = np.zeros(len(ends), np.int64)
    for place in range(int(lengths.max())):  # units, tens, hundreds, ... of every number at once
        digit = body[ends - 1 - place].astype(np.int64) - ord("0")
        values += np.where(lengths > place, digit, 0) * 10**place
    return values.reshape(size, size).astype(np.float32), (start, end + 2)
