"""The write stage into a real database folder, read back through the DuckDB catalog and ranged reads."""

from __future__ import annotations

import json

import gemmi
import numpy as np
import pytest
from fake_database import entry, random_prediction, write_database

from structome.models.types import Failure, PredictionRequest
from structome.storage import catalog
from structome.storage.layout import DatabaseLayout
from structome.storage.mmcif import validate_mmcif
from structome.storage.reader import AmbiguousEntryError, EntryNotFoundError, read_entry_file, resolve_entry


@pytest.fixture(params=["local", "s3"])
def database(request, tmp_path, data_dir):
    """The same shard written to a local folder and to an S3-compatible object store."""
    location = tmp_path / "db" if request.param == "local" else request.getfixturevalue("s3_database")
    long_sequence = "MKTAYIAKQRQISFVKSHFSRQLEERLGLIEVQ"
    entries = [
        entry("SM-P1-F1", "P1", "MKVLAAGIVGLLW", "p-a"),
        entry("SM-P2-F1", "P2", "MKVLAAGIVGLLW", "p-a"),  # same sequence: same prediction
        entry("SM-P3-F1", "P3", long_sequence, "p-b", 1, 1, 20),
        entry("SM-P3-F2", "P3", long_sequence, "p-c", 2, 14, 33),
        entry("SM-P4-F1", "P4", "MKKK", "p-oom"),
    ]
    requests = [
        PredictionRequest("p-a", "MKVLAAGIVGLLW"),
        PredictionRequest("p-b", long_sequence[:20]),
        PredictionRequest("p-c", long_sequence[13:]),
        PredictionRequest("p-oom", "MKKK"),
    ]
    predictions = [random_prediction(r, i) for i, r in enumerate(requests[:3])]
    failures = [Failure("sp|P4|X_ECOLI", "in.fasta", "out_of_memory", "too big", "predict", "SM-P4-F1")]
    layout = write_database(location, entries, predictions, failures)
    return layout, predictions


def test_a_written_shard_is_queryable_and_complete(database):
    layout, _ = database
    assert layout.list_files(".staging") == []
    assert len(layout.committed_shards()) == 1
    entries = catalog.query(layout, "SELECT * FROM entries ORDER BY entryId").to_pylist()
    assert [e["entryId"] for e in entries] == ["SM-P1-F1", "SM-P2-F1", "SM-P3-F1", "SM-P3-F2"]
    assert entries[0]["predictionId"] == entries[1]["predictionId"]
    assert entries[3]["uniprotStart"] == 14 and entries[3]["uniprotEnd"] == 33
    assert entries[0]["sequenceChecksum"] == "0197355516942160" and entries[0]["untrained"]
    fractions = sum(
        entries[0][c]
        for c in ("fractionPlddtVeryLow", "fractionPlddtLow", "fractionPlddtConfident", "fractionPlddtVeryHigh")
    )
    assert fractions == pytest.approx(1.0)
    residues = catalog.query(
        layout, "SELECT count(*) AS n, min(uniprotResidueNumber) AS lo FROM residues WHERE entryId = 'SM-P3-F2'"
    ).to_pylist()[0]
    assert residues == {"n": 20, "lo": 14}
    assert catalog.query(layout, "SELECT count(*) AS n FROM files").to_pylist()[0]["n"] == 12
    failures = catalog.query(layout, "SELECT entryId, reason, stage FROM failures").to_pylist()
    assert failures == [{"entryId": "SM-P4-F1", "reason": "out_of_memory", "stage": "predict"}]


def test_get_reads_each_file_kind_back_in_afdb_format(database, data_dir):
    layout, predictions = database
    cif = read_entry_file(layout, "P1", "cif")
    assert cif.file_name == "SM-P1-F1-model_v1.cif"
    assert validate_mmcif(cif.data.decode(), data_dir / "dictionaries" / "mmcif_ma.dic") == []
    structure = gemmi.make_structure_from_block(gemmi.cif.read_string(cif.data.decode()).sole_block())
    assert len(structure[0]["A"]) == 13
    pae = json.loads(read_entry_file(layout, "SM-P3-F1", "pae").data)
    assert np.array_equal(np.array(pae[0]["predicted_aligned_error"]), predictions[1].pae)
    confidence = json.loads(read_entry_file(layout, "SM-P2-F1", "confidence").data)
    assert confidence["residueNumber"][0] == 1 and len(confidence["confidenceScore"]) == 13


def test_an_accession_with_fragments_must_be_named_precisely(database):
    layout, _ = database
    with pytest.raises(AmbiguousEntryError) as error:
        resolve_entry(layout, "P3")
    assert error.value.entry_ids == ["SM-P3-F1", "SM-P3-F2"]
    assert resolve_entry(layout, "SM-P3-F2") == "SM-P3-F2"
    with pytest.raises(EntryNotFoundError):
        resolve_entry(layout, "P4")  # failed, so not an entry


def test_catalog_views_exist_before_any_shard_and_work_from_any_folder(tmp_path, monkeypatch):
    layout = DatabaseLayout(tmp_path / "empty")
    catalog.refresh_catalog(layout)
    monkeypatch.chdir("/")
    for table in ("entries", "residues", "files", "failures", "builds"):
        assert catalog.query(layout, f"SELECT count(*) AS n FROM {table}").to_pylist() == [{"n": 0}]
    columns = catalog.query(layout, "SELECT * FROM entries").column_names
    assert {"entryId", "globalMetricValue", "sequenceChecksum", "ptm", "predictionId"} <= set(columns)


def test_failures_view_drops_entries_that_a_later_run_predicted(database):
    layout, _ = database
    from structome.storage import rows

    old = Failure("sp|P1|X_ECOLI", "in.fasta", "out_of_memory", "earlier run", "predict", "SM-P1-F1")
    layout.write_parquet_atomic(
        rows.failures_table([old, old], "20200101T000000Z-000000"), layout.build_failures("20200101T000000Z-000000")
    )
    catalog.refresh_catalog(layout)
    reasons = catalog.query(layout, "SELECT entryId FROM failures ORDER BY entryId").column("entryId").to_pylist()
    assert reasons == ["SM-P4-F1"]
