"""The write stage into a real database folder, read back through the DuckDB catalog and ranged reads."""

from __future__ import annotations

import datetime as dt
import json

import gemmi
import numpy as np
import pytest

from models.types import Entry, Failure, Prediction, PredictionRequest, Provenance
from pipelines.sharding import plan_shards
from pipelines.write import WriteContext, write_shard
from storage import catalog
from storage.layout import DatabaseLayout
from storage.mmcif import validate_mmcif
from storage.reader import AmbiguousEntryError, EntryNotFoundError, read_entry_file, resolve_entry

PROVENANCE = Provenance(
    model="esmfold-tiny", model_version="v1", weights="/tmp/w", weights_sha256="ab" * 32, untrained=True,
    precision="stem=fp32,trunk=fp32", num_recycles=1, chunk_size=None, device="cpu",
)


def _entry(entry_id, accession, sequence, prediction_id, fragment=1, start=1, end=None):
    return Entry(
        entry_id=entry_id, record_id=f"sp|{accession}|X_ECOLI", source_file="in.fasta", accession=accession,
        sequence=sequence, fragment=fragment, start=start, end=end or len(sequence),
        sequence_checksum="0197355516942160", sequence_md5="f" * 32, prediction_id=prediction_id,
        entry_name="X_ECOLI", database="sp", description="Test protein", organism="Escherichia coli", tax_id=83333,
        gene="xyz",
    )


def _prediction(request: PredictionRequest, seed: int) -> Prediction:
    rng = np.random.default_rng(seed)
    n = len(request.sequence)
    coords = np.cumsum(rng.normal(0, 1.5, (n, 37, 3)), axis=0).astype(np.float32)
    mask = np.zeros((n, 37), bool)
    mask[:, [0, 1, 2, 4]] = True
    return Prediction(request.prediction_id, request.sequence, coords, mask,
                      rng.uniform(20, 95, n).astype(np.float32), 0.42, rng.integers(0, 32, (n, n), dtype=np.uint8))


@pytest.fixture(params=["local", "s3"])
def database(request, tmp_path, data_dir):
    """The same shard written to a local folder and to an S3-compatible object store."""
    location = tmp_path / "db" if request.param == "local" else request.getfixturevalue("s3_database")
    layout = DatabaseLayout(location)
    long_sequence = "MKTAYIAKQRQISFVKSHFSRQLEERLGLIEVQ"
    entries = [
        _entry("SM-P1-F1", "P1", "MKVLAAGIVGLLW", "p-a"),
        _entry("SM-P2-F1", "P2", "MKVLAAGIVGLLW", "p-a"),  # same sequence: same prediction
        _entry("SM-P3-F1", "P3", long_sequence, "p-b", 1, 1, 20),
        _entry("SM-P3-F2", "P3", long_sequence, "p-c", 2, 14, 33),
        _entry("SM-P4-F1", "P4", "MKKK", "p-oom"),
    ]
    requests = [PredictionRequest("p-a", "MKVLAAGIVGLLW"), PredictionRequest("p-b", long_sequence[:20]),
                PredictionRequest("p-c", long_sequence[13:]), PredictionRequest("p-oom", "MKKK")]
    shard = plan_shards(entries, requests, shard_size=10)[0]
    predictions = [_prediction(r, i) for i, r in enumerate(requests[:3])]
    failures = [Failure("sp|P4|X_ECOLI", "in.fasta", "out_of_memory", "too big", "predict", "SM-P4-F1")]
    context = WriteContext(layout, PROVENANCE, "20261125T000000Z-aaaaaa", dt.date(2026, 11, 25))
    layout.create()
    summary = write_shard(context, shard, predictions, failures)
    catalog.refresh_catalog(layout)
    return layout, summary, predictions


def test_a_written_shard_is_queryable_and_complete(database):
    layout, summary, _ = database
    assert summary.committed and summary.entries_written == 4
    assert layout.list_files(".staging") == []
    assert set(layout.committed_shards()) == {summary.shard_id}
    entries = catalog.query(layout, "SELECT * FROM entries ORDER BY entryId").to_pylist()
    assert [e["entryId"] for e in entries] == ["SM-P1-F1", "SM-P2-F1", "SM-P3-F1", "SM-P3-F2"]
    assert entries[0]["predictionId"] == entries[1]["predictionId"]
    assert entries[3]["uniprotStart"] == 14 and entries[3]["uniprotEnd"] == 33
    assert entries[0]["sequenceChecksum"] == "0197355516942160" and entries[0]["untrained"]
    fractions = sum(entries[0][c] for c in ("fractionPlddtVeryLow", "fractionPlddtLow", "fractionPlddtConfident",
                                             "fractionPlddtVeryHigh"))
    assert fractions == pytest.approx(1.0)
    residues = catalog.query(layout, "SELECT count(*) AS n, min(uniprotResidueNumber) AS lo FROM residues "
                                     "WHERE entryId = 'SM-P3-F2'").to_pylist()[0]
    assert residues == {"n": 20, "lo": 14}
    assert catalog.query(layout, "SELECT count(*) AS n FROM files").to_pylist()[0]["n"] == 12
    failures = catalog.query(layout, "SELECT entryId, reason, stage FROM failures").to_pylist()
    assert failures == [{"entryId": "SM-P4-F1", "reason": "out_of_memory", "stage": "predict"}]


def test_get_reads_each_file_kind_back_in_afdb_format(database, data_dir):
    layout, _, predictions = database
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
    layout, _, _ = database
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
    layout, _, _ = database
    from storage import rows

    old = Failure("sp|P1|X_ECOLI", "in.fasta", "out_of_memory", "earlier run", "predict", "SM-P1-F1")
    layout.write_parquet_atomic(rows.failures_table([old, old], "20200101T000000Z-000000"),
                                layout.build_failures("20200101T000000Z-000000"))
    catalog.refresh_catalog(layout)
    reasons = catalog.query(layout, "SELECT entryId FROM failures ORDER BY entryId").column("entryId").to_pylist()
    assert reasons == ["SM-P4-F1"]
