"""AlphaFold DB's pLDDT bands: the one table every writer, column and page derives its band from.

D (very low) < 50 <= L (low) < 70 <= M (confident) < 90 <= H (very high).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np


@dataclass(frozen=True)
class PlddtBand:
    lower: float  # pLDDT (0-100), inclusive; -inf for the lowest band (the next band's bound is exclusive)
    code: str  # letter of the confidence JSON's confidenceCategory
    label: str  # AlphaFold DB's legend text
    colour: str  # AlphaFold DB's colour, #RRGGBB
    fraction_column: str  # entries column holding the fraction of residues in the band


PLDDT_BANDS = (  # lowest first
    PlddtBand(float("-inf"), "D", "Very low (pLDDT < 50)", "#FF7D45", "fractionPlddtVeryLow"),
    PlddtBand(50.0, "L", "Low (70 > pLDDT ≥ 50)", "#FFDB13", "fractionPlddtLow"),
    PlddtBand(70.0, "M", "Confident (90 > pLDDT ≥ 70)", "#65CBF3", "fractionPlddtConfident"),
    PlddtBand(90.0, "H", "Very high (pLDDT ≥ 90)", "#0053D6", "fractionPlddtVeryHigh"),
)
FRACTION_COLUMNS = tuple(band.fraction_column for band in PLDDT_BANDS)
_EDGES = tuple(band.lower for band in PLDDT_BANDS[1:])


def band_indices(values: Iterable[float] | np.ndarray) -> np.ndarray:
    """Index into PLDDT_BANDS of each finite pLDDT value (0-100); non-finite values raise ValueError."""
    import numpy as np  # here, not on import: the schema's column names (FRACTION_COLUMNS) come from this module

    array = values.astype(np.float64) if isinstance(values, np.ndarray) else np.fromiter(values, np.float64)
    if not np.isfinite(array).all():
        raise ValueError("pLDDT values must be finite")
    return np.digitize(array, _EDGES)


def band_of(value: float) -> PlddtBand:
    """The band of one pLDDT value (a NaN counts as very low)."""
    return next((band for band in reversed(PLDDT_BANDS) if value >= band.lower), PLDDT_BANDS[0])


def plddt_fractions(plddt: np.ndarray) -> dict[str, float]:
    """fraction column -> share of residues in the band, for a non-empty finite [L] array."""
    indices = band_indices(plddt)
    return {band.fraction_column: float((indices == i).mean()) for i, band in enumerate(PLDDT_BANDS)}
