"""AlphaFold DB v4 JSON companions of a model file (PAE and per-residue confidence) and the file names.

Both writers are pure functions returning minified JSON text (no spaces, no trailing newline), byte-for-byte
in the layout AlphaFold DB serves:

* PAE: `[{"predicted_aligned_error":[[0,1,...],...],"max_predicted_aligned_error":31.75}]` (integers, Å).
* confidence: `{"residueNumber":[1,...],"confidenceScore":[55.32,...],"confidenceCategory":["L",...]}`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

import numpy as np

from structome.models.types import PAE_MAX, FileKind, Prediction
from structome.storage.plddt import PLDDT_BANDS, band_indices

_CODES = tuple(band.code for band in PLDDT_BANDS)
_INT_TEXT = np.array([str(value) for value in range(256)], dtype=object)  # uint8 value -> its JSON text


def entry_file_names(entry_id: str, version: int) -> dict[FileKind, str]:
    """AlphaFold DB file names of one entry: model mmCIF, PAE JSON and confidence JSON."""
    return {
        FileKind.CIF: f"{entry_id}-model_v{version}.cif",
        FileKind.PAE: f"{entry_id}-predicted_aligned_error_v{version}.json",
        FileKind.CONFIDENCE: f"{entry_id}-confidence_v{version}.json",
    }


def to_pae_json(prediction: Prediction) -> str:
    """The AFDB v4 PAE file: one object in a list, the L x L matrix as integers, minified."""
    pae = np.asarray(prediction.pae)
    if pae.dtype != np.uint8:
        if not np.issubdtype(pae.dtype, np.integer) or pae.min(initial=0) < 0 or pae.max(initial=0) > 255:
            raise ValueError(f"{prediction.prediction_id}: PAE must hold integers 0..255, got {pae.dtype}")
        pae = pae.astype(np.uint8)
    # A lookup table and str.join: ~5x faster than json.dumps on nested lists, same bytes.
    rows = "],[".join(",".join(row) for row in _INT_TEXT[pae].tolist())
    return f'[{{"predicted_aligned_error":[[{rows}]],"max_predicted_aligned_error":{json.dumps(PAE_MAX)}}}]'


def to_confidence_json(prediction: Prediction) -> str:
    """The AFDB confidence file: residue numbers 1..L, pLDDT to 2 decimals and its band letter."""
    scores = [round(value, 2) for value in prediction.plddt.astype(np.float64).tolist()]
    document = {
        "residueNumber": list(range(1, len(scores) + 1)),
        "confidenceScore": scores,
        "confidenceCategory": plddt_category(scores),  # from the rounded scores, so the file is consistent
    }
    return json.dumps(document, separators=(",", ":"))


def plddt_category(values: Iterable[float] | np.ndarray) -> list[str]:
    """AFDB band letter per pLDDT value (0-100): D < 50 <= L < 70 <= M < 90 <= H."""
    return [_CODES[index] for index in band_indices(values).tolist()]
