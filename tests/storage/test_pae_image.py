"""The PAE image: decoded back with a small PNG reader (zlib + struct), checked pixel by pixel."""

from __future__ import annotations

import json
import struct
import time
import zlib

import numpy as np
import pytest

from structome.models.types import PAE_MAX, Prediction
from structome.storage.afdb_json import to_pae_json
from structome.storage.pae_image import GREENS_R, pae_png, pae_png_from_json, read_pae_json

DARK_GREEN, NEAR_WHITE = (0x00, 0x44, 0x1B), (0xF7, 0xFC, 0xF5)  # Greens_r at 0 and at 1


def decode_png(data: bytes) -> np.ndarray:
    """An 8-bit RGB or indexed-colour, non-interlaced PNG as [height, width, 3] uint8, checking every CRC."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    position, chunks = 8, []
    while position < len(data):
        (length,) = struct.unpack(">I", data[position : position + 4])
        kind, body = data[position + 4 : position + 8], data[position + 8 : position + 8 + length]
        (crc,) = struct.unpack(">I", data[position + 8 + length : position + 12 + length])
        assert crc == zlib.crc32(kind + body), kind
        chunks.append((kind, body))
        position += 12 + length
    kinds = [kind for kind, _ in chunks]
    assert kinds[0] == b"IHDR" and kinds[-1] == b"IEND" and b"IDAT" in kinds
    width, height, depth, colour, compression, filtering, interlace = struct.unpack(">IIBBBBB", chunks[0][1])
    assert (depth, compression, filtering, interlace) == (8, 0, 0, 0) and colour in (2, 3)
    channels = 3 if colour == 2 else 1
    raw = zlib.decompress(b"".join(body for kind, body in chunks if kind == b"IDAT"))
    rows = np.frombuffer(raw, np.uint8).reshape(height, 1 + width * channels)
    pixels = np.zeros((height, width * channels), np.uint8)
    previous = np.zeros(width * channels, np.uint8)
    for y, (kind, line) in enumerate(zip(rows[:, 0], rows[:, 1:], strict=True)):
        if kind == 0:
            pixels[y] = line
        elif kind == 2:  # Up
            pixels[y] = line + previous
        else:
            raise AssertionError(f"filter type {kind} not supported by this reader")
        previous = pixels[y]
    if colour == 2:
        return pixels.reshape(height, width, 3)
    palette = np.frombuffer(dict(chunks)[b"PLTE"], np.uint8).reshape(-1, 3)
    return palette[pixels]


def smooth_pae(length: int, seed: int = 0) -> np.ndarray:
    """A PAE-like map from a random-walk chain's CA distances (as fake_database does), integers 0-31."""
    rng = np.random.default_rng(seed)
    ca = np.cumsum(rng.normal(0, 1.5, (length, 3)), axis=0)
    return np.clip(np.linalg.norm(ca[:, None] - ca[None], axis=-1) / 3, 0, 31).astype(np.uint8)


def pae_json(pae: np.ndarray) -> bytes:
    prediction = Prediction(
        "p",
        "A" * len(pae),
        np.zeros((len(pae), 37, 3), np.float32),
        np.ones((len(pae), 37), bool),
        np.full(len(pae), 50, np.float32),
        0.5,
        pae,
    )
    return to_pae_json(prediction).encode()


def test_one_pixel_per_residue_pair_coloured_by_pae():
    pae = smooth_pae(37)
    pae[0, 0], pae[3, 5], pae[5, 3] = 0, 31, 7
    image = decode_png(pae_png(pae))
    assert image.shape == (37, 37, 3)
    assert tuple(image[0, 0]) == DARK_GREEN
    expected = GREENS_R[np.minimum(np.floor(pae / PAE_MAX * 256), 255).astype(int)]
    assert np.array_equal(image, expected)
    assert tuple(image[3, 5]) == tuple(GREENS_R[int(31 / PAE_MAX * 256)])  # row = scored residue, as in the JSON
    assert tuple(image[5, 3]) != tuple(image[3, 5])


def test_the_ramp_runs_from_dark_green_to_white_and_gets_lighter_all_the_way():
    ramp = decode_png(pae_png(np.linspace(0, PAE_MAX, 64 * 64).reshape(64, 64)))
    assert tuple(ramp[0, 0]) == DARK_GREEN and tuple(ramp[-1, -1]) == NEAR_WHITE
    lightness = ramp.reshape(-1, 3).astype(int).sum(axis=1)
    assert (np.diff(lightness) >= 0).all() and lightness[-1] - lightness[0] > 600
    assert (np.diff(GREENS_R.astype(int), axis=0) >= 0).all()  # every channel rises, not just the sum
    above = decode_png(pae_png(np.array([[40.0, -1.0], [PAE_MAX, 0.0]])))  # out of range: clamped to the ends
    assert [tuple(p) for p in above.reshape(-1, 3)] == [NEAR_WHITE, DARK_GREEN, NEAR_WHITE, DARK_GREEN]


def test_max_error_sets_the_scale():
    image = decode_png(pae_png(np.array([[0, 10], [10, 20]]), max_error=20))
    assert tuple(image[1, 1]) == NEAR_WHITE and tuple(image[0, 0]) == DARK_GREEN
    assert tuple(image[0, 1]) == tuple(GREENS_R[128])


@pytest.mark.parametrize("bad", [np.zeros((3, 4)), np.zeros((0, 0)), np.zeros(5), np.array([[np.nan]])])
def test_bad_matrices_are_refused(bad):
    with pytest.raises(ValueError):
        pae_png(bad)


def test_from_the_stored_json_equals_from_the_matrix():
    pae = smooth_pae(50, seed=3)
    pae[1, 2], pae[2, 1] = 255, 100  # three-digit values too
    document = pae_json(pae)
    matrix, max_error = read_pae_json(document)
    assert np.array_equal(matrix, pae) and max_error == PAE_MAX
    assert pae_png_from_json(document) == pae_png(pae)


@pytest.mark.parametrize(
    "document",
    [
        '[{"predicted_aligned_error": [[0, 10], [12, 3]], "max_predicted_aligned_error": 31.75}]',  # spaces
        '[{"predicted_aligned_error":[[0.0,10.5],[12,3]],"max_predicted_aligned_error":31.75}]',  # decimals
        '{"predicted_aligned_error":[[0,10],[12,3]],"max_predicted_aligned_error":31.75}',  # no list around it
        '[{"max_predicted_aligned_error":31.75,"predicted_aligned_error":[[0,10],[12,3]]}]',  # key order
    ],
)
def test_other_layouts_of_the_json_read_the_same(document):
    matrix, max_error = read_pae_json(document)
    record = json.loads(document)
    expected = (record[0] if isinstance(record, list) else record)["predicted_aligned_error"]
    assert matrix.tolist() == expected and max_error == 31.75


@pytest.mark.parametrize(
    "document",
    [
        '[{"predicted_aligned_error":[[0,1],[2]],"max_predicted_aligned_error":31.75}]',  # ragged
        '[{"predicted_aligned_error":[[0,1]5,[2,3]],"max_predicted_aligned_error":31.75}]',  # not JSON
        '[{"predicted_aligned_error":[[0,,1],[2,3]],"max_predicted_aligned_error":31.75}]',
        '[{"predicted_aligned_error":[[0,1],[2,3]],"max_predicted_aligned_error":31.75}',  # truncated
        '[{"distance":[1,2]}]',
    ],
)
def test_malformed_json_is_refused(document):
    with pytest.raises(ValueError):  # json.JSONDecodeError is a ValueError
        pae_png_from_json(document)


def test_fast_enough_for_a_request_at_1400_residues():
    document = pae_json(smooth_pae(1400))
    best = min(_timed(pae_png_from_json, document) for _ in range(3))
    assert decode_png(pae_png_from_json(document)).shape == (1400, 1400, 3)
    assert best < 2.0, f"{best:.2f} s"  # ~0.2 s on a 2-core CI machine; generous for loaded runners


def _timed(function, *args) -> float:
    start = time.perf_counter()
    function(*args)
    return time.perf_counter() - start


def test_a_real_afdb_pae_file(data_dir):
    document = (data_dir / "afdb" / "AF-O05023-F1-predicted_aligned_error_v4.json").read_bytes()
    matrix, max_error = read_pae_json(document)
    assert matrix.tolist() == json.loads(document)[0]["predicted_aligned_error"] and max_error == 31.75
    image = decode_png(pae_png_from_json(document))
    assert image.shape == (118, 118, 3) and tuple(image[0, 0]) == DARK_GREEN  # a residue against itself: 0 Å
