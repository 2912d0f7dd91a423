"""The one pLDDT band table and what is derived from it: confidence letters, entries columns, row fractions."""

from __future__ import annotations

import numpy as np
import pytest

from structome.storage import schema
from structome.storage.afdb_json import plddt_category
from structome.storage.plddt import FRACTION_COLUMNS, PLDDT_BANDS, band_indices, band_of, plddt_fractions


def test_bands_are_afdb_bands_lowest_first():
    assert [(b.lower, b.code) for b in PLDDT_BANDS] == [(float("-inf"), "D"), (50.0, "L"), (70.0, "M"), (90.0, "H")]
    assert [b.colour for b in PLDDT_BANDS] == ["#FF7D45", "#FFDB13", "#65CBF3", "#0053D6"]


def test_entries_schema_holds_one_float_fraction_column_per_band_in_order():
    names = schema.ENTRIES.names
    start = names.index(FRACTION_COLUMNS[0])
    assert (
        tuple(names[start : start + len(PLDDT_BANDS)])
        == FRACTION_COLUMNS
        == ("fractionPlddtVeryLow", "fractionPlddtLow", "fractionPlddtConfident", "fractionPlddtVeryHigh")
    )
    assert all(schema.ENTRIES.field(c).type == "float" for c in FRACTION_COLUMNS)


def test_bounds_are_inclusive_below_and_exclusive_above():
    values = [0.0, 49.999, 50.0, 69.999, 70.0, 89.999, 90.0, 100.0]
    assert band_indices(values).tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    assert [band_of(v).code for v in values] == plddt_category(values) == ["D", "D", "L", "L", "M", "M", "H", "H"]
    assert band_of(float("nan")).code == "D"
    with pytest.raises(ValueError):
        band_indices([float("nan")])


def test_fractions_count_float32_values_at_the_bounds():
    plddt = np.array([10.0, 50.0, 50.0, 69.99, 70.0, 90.0, 95.0, 100.0], dtype=np.float32)
    assert plddt_fractions(plddt) == {
        "fractionPlddtVeryLow": 0.125,
        "fractionPlddtLow": 0.375,
        "fractionPlddtConfident": 0.125,
        "fractionPlddtVeryHigh": 0.375,
    }
