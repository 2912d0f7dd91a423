"""AlphaFold DB PAE and confidence JSON writers, and the AFDB file names."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from structome.models.types import PAE_MAX, Prediction
from structome.storage.afdb_json import entry_file_names, plddt_category, to_confidence_json, to_pae_json

AFDB_PAE = Path(__file__).resolve().parents[1] / "data" / "afdb" / "AF-O05023-F1-predicted_aligned_error_v4.json"


def make_prediction(plddt: list[float], seed: int = 3, pae: np.ndarray | None = None) -> Prediction:
    n = len(plddt)
    rng = np.random.default_rng(seed)
    if pae is None:
        pae = rng.integers(0, 32, size=(n, n)).astype(np.uint8)
        np.fill_diagonal(pae, 0)
    coords = rng.normal(size=(n, 37, 3)).astype(np.float32)
    mask = np.zeros((n, 37), dtype=bool)
    mask[:, :5] = True
    return Prediction("p", "A" * n, coords, mask, np.asarray(plddt, dtype=np.float32), 0.5, pae)


# --- PAE -------------------------------------------------------------------------------------------


def test_pae_round_trip() -> None:
    prediction = make_prediction(list(np.linspace(30, 95, 25)))
    text = to_pae_json(prediction)
    document = json.loads(text)
    assert isinstance(document, list) and len(document) == 1
    matrix = document[0]["predicted_aligned_error"]
    assert len(matrix) == 25 and all(len(row) == 25 for row in matrix)
    assert all(type(value) is int for row in matrix for value in row)
    assert np.array_equal(np.array(matrix), prediction.pae)
    assert document[0]["max_predicted_aligned_error"] == PAE_MAX == 31.75


def test_pae_is_minified_like_json_dumps() -> None:
    prediction = make_prediction([80.0] * 12)
    text = to_pae_json(prediction)
    assert " " not in text and "\n" not in text
    expected = [{"predicted_aligned_error": prediction.pae.tolist(), "max_predicted_aligned_error": 31.75}]
    assert text == json.dumps(expected, separators=(",", ":"))


def test_pae_layout_matches_real_afdb_file() -> None:
    real_text = AFDB_PAE.read_text()
    real = json.loads(real_text)
    ours_text = to_pae_json(make_prediction([70.0] * 10))
    ours = json.loads(ours_text)
    assert type(ours) is type(real) is list and len(ours) == len(real) == 1
    assert list(ours[0]) == list(real[0])  # same keys, same order
    assert {key: type(value) for key, value in ours[0].items()} == {key: type(value) for key, value in real[0].items()}
    assert type(real[0]["predicted_aligned_error"][0][0]) is type(ours[0]["predicted_aligned_error"][0][0]) is int
    assert ours[0]["max_predicted_aligned_error"] == real[0]["max_predicted_aligned_error"]
    prefix = '[{"predicted_aligned_error":[['
    assert ours_text.startswith(prefix) and real_text.startswith(prefix)
    suffix = ']],"max_predicted_aligned_error":31.75}]'
    assert ours_text.endswith(suffix) and real_text.endswith(suffix)


def test_pae_single_residue_and_wider_integer_types() -> None:
    one = make_prediction([90.0], pae=np.zeros((1, 1), dtype=np.uint8))
    assert to_pae_json(one) == '[{"predicted_aligned_error":[[0]],"max_predicted_aligned_error":31.75}]'
    wide = make_prediction([50.0, 60.0], pae=np.array([[0, 31], [12, 0]], dtype=np.int64))
    assert json.loads(to_pae_json(wide))[0]["predicted_aligned_error"] == [[0, 31], [12, 0]]


def test_pae_rejects_non_integer_matrix() -> None:
    prediction = make_prediction([50.0, 60.0], pae=np.array([[0.0, 1.5], [2.0, 0.0]]))
    with pytest.raises(ValueError, match="integers"):
        to_pae_json(prediction)


# --- confidence ------------------------------------------------------------------------------------


def test_confidence_round_trip_and_boundaries() -> None:
    plddt = [49.99, 50.0, 69.99, 70.0, 89.99, 90.0, 100.0, 0.0, 12.345678]
    text = to_confidence_json(make_prediction(plddt))
    assert " " not in text and "\n" not in text
    document = json.loads(text)
    assert list(document) == ["residueNumber", "confidenceScore", "confidenceCategory"]
    assert document["residueNumber"] == list(range(1, 10))
    assert document["confidenceScore"] == [49.99, 50.0, 69.99, 70.0, 89.99, 90.0, 100.0, 0.0, 12.35]
    assert document["confidenceCategory"] == ["D", "L", "L", "M", "M", "H", "H", "D", "D"]


def test_confidence_category_follows_the_rounded_score() -> None:
    document = json.loads(to_confidence_json(make_prediction([49.996, 89.994])))
    assert document["confidenceScore"] == [50.0, 89.99]
    assert document["confidenceCategory"] == ["L", "M"]


def test_plddt_category_accepts_lists_arrays_and_iterables() -> None:
    assert plddt_category([0, 49.999, 50, 70, 90, 100]) == ["D", "D", "L", "M", "H", "H"]
    assert plddt_category(np.array([55.0, 95.0], dtype=np.float32)) == ["L", "H"]
    assert plddt_category(value for value in (69.999, 89.999)) == ["L", "M"]
    assert plddt_category([]) == []
    with pytest.raises(ValueError):
        plddt_category([float("nan")])


# --- names -----------------------------------------------------------------------------------------


def test_entry_file_names_follow_afdb() -> None:
    assert entry_file_names("SM-P41068-F1", 4) == {
        "cif": "SM-P41068-F1-model_v4.cif",
        "pae": "SM-P41068-F1-predicted_aligned_error_v4.json",
        "confidence": "SM-P41068-F1-confidence_v4.json",
    }
    assert AFDB_PAE.name == entry_file_names("AF-O05023-F1", 4)["pae"]
