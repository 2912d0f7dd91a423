"""Shared records: failure codes are enums whose values are the stored strings."""

from __future__ import annotations

import pytest

from structome.models.types import Failure, FailureReason, FileKind, Stage


def test_failure_converts_codes_to_enums_and_rejects_unknown_ones():
    failure = Failure("r1", "in.fasta", "out_of_memory", "too big", "predict", "SM-P1-F1")
    assert failure.reason is FailureReason.OUT_OF_MEMORY and failure.stage is Stage.PREDICT
    assert Failure("r1", "in.fasta", FailureReason.OUT_OF_MEMORY, "too big", Stage.PREDICT, "SM-P1-F1") == failure
    with pytest.raises(ValueError):
        Failure("r1", "in.fasta", "out of memory", "x", "predict")
    with pytest.raises(ValueError):
        Failure("r1", "in.fasta", "out_of_memory", "x", "fold")


def test_enum_values_are_the_stored_strings():
    assert [s.value for s in Stage] == ["ingest", "predict", "write"]
    assert [k.value for k in FileKind] == ["cif", "pae", "confidence"]
    assert f"{FailureReason.WORKER_FAILED}" == str(FailureReason.WORKER_FAILED) == "worker_failed"
