"""Length-sorted shards and residue-budget batches."""

from __future__ import annotations

import pickle

import numpy as np
from fake_database import CREATED, PROVENANCE

from structome.models.types import Entry, Failure, Prediction, PredictionRequest
from structome.pipelines.sharding import ShardPredictions, cut_shards
from structome.storage.afdb_json import to_confidence_json, to_pae_json
from structome.storage.mmcif import to_mmcif


def _entry(entry_id: str, sequence: str, prediction_id: str) -> Entry:
    return Entry(
        entry_id=entry_id,
        record_id=entry_id,
        source_file="x.fasta",
        accession=entry_id,
        sequence=sequence,
        fragment=1,
        start=1,
        end=len(sequence),
        sequence_checksum="0" * 16,
        sequence_md5="0" * 32,
        prediction_id=prediction_id,
    )


def test_shards_are_length_sorted_and_keep_entries_with_their_prediction():
    requests = [PredictionRequest(f"p{n}", "A" * (n % 100)) for n in (5, 40, 12, 140, 7)]
    entries = [_entry(f"E{i}", r.sequence, r.prediction_id) for i, r in enumerate(requests)]
    entries.append(_entry("E-dup", "A" * 12, "p12"))  # shares the prediction of E2
    shards = cut_shards(entries, requests, shard_size=2)
    lengths = [len(r.sequence) for s in shards for r in s.requests]
    assert lengths == sorted(lengths, reverse=True)
    assert [len(s.requests) for s in shards] == [2, 2, 1]
    holder = next(s for s in shards if any(r.prediction_id == "p12" for r in s.requests))
    assert {"E2", "E-dup"} <= {e.entry_id for e in holder.entries}
    assert sum(len(s.entries) for s in shards) == len(entries)


def test_shard_ids_are_content_addresses():
    requests = [PredictionRequest("a", "MK"), PredictionRequest("b", "MKV")]
    entries = [_entry("A", "MK", "a"), _entry("B", "MKV", "b")]
    first = cut_shards(entries, requests, 1)
    again = cut_shards(list(reversed(entries)), list(reversed(requests)), 1)
    assert [s.shard_id for s in first] == [s.shard_id for s in again]
    assert len({s.shard_id for s in first}) == 2


def _prediction(prediction_id: str, sequence: str, seed: int, absent: float = 0.0) -> Prediction:
    """Random outputs; X residues have no atoms, others a few; absent atoms' coordinates are `absent`."""
    rng = np.random.default_rng(seed)
    n = len(sequence)
    mask = rng.random((n, 37)) < 0.25
    mask[:, 1] = True
    mask[[i for i, letter in enumerate(sequence) if letter == "X"]] = False
    coords = np.where(mask[..., None], rng.normal(0, 30, (n, 37, 3)), absent).astype(np.float32)
    return Prediction(
        prediction_id,
        sequence,
        coords,
        mask,
        rng.uniform(0, 100, n).astype(np.float32),
        float(rng.random()),
        rng.integers(0, 32, (n, n), dtype=np.uint8),
    )


def _shard_predictions(*predictions: Prediction) -> ShardPredictions:
    failure = Failure("r9", "x.fasta", "out_of_memory", "too long", "predict", "E9", 9)
    return ShardPredictions("s1", predictions, (failure,), 1.25, 640)


def _over_the_wire(result: ShardPredictions) -> ShardPredictions:
    """As Ray's object store does it: pickle protocol 5, arrays out of band."""
    buffers = []
    data = pickle.dumps(result, protocol=5, buffer_callback=buffers.append)
    return pickle.loads(data, buffers=buffers)


def test_predictions_round_trip_the_wire_bit_for_bit():
    sent = _shard_predictions(
        _prediction("p1", "MKVXLAAG", 1),
        _prediction("p2", "A", 2),
        _prediction("p3", "XX", 3),
        _prediction("p4", "MKTAYIAKQRQISFVKSHFSRQ" * 9, 4),
    )
    received = _over_the_wire(sent)
    assert (received.shard_id, received.failures, received.model_seconds, received.padded_residues) == (
        sent.shard_id,
        sent.failures,
        sent.model_seconds,
        sent.padded_residues,
    )
    assert len(received.predictions) == len(sent.predictions)
    for before, after in zip(sent.predictions, received.predictions, strict=True):
        assert (after.prediction_id, after.sequence) == (before.prediction_id, before.sequence)
        assert after.ptm == before.ptm and type(after.ptm) is float
        for name in ("coords", "atom_mask", "plddt", "pae"):
            old, new = getattr(before, name), getattr(after, name)
            assert new.dtype == old.dtype and new.shape == old.shape and new.tobytes() == old.tobytes(), name


def test_an_empty_shard_round_trips():
    received = _over_the_wire(_shard_predictions())
    assert received.predictions == () and received.failures[0].entry_id == "E9"


def test_the_wire_form_is_small_and_absent_atoms_do_not_travel():
    sequence = "MKTAYIAKQRQISFVKSHFSRQ" * 5  # 110 aa
    sent = _shard_predictions(*(_prediction(f"p{i}", sequence, i, absent=7.5) for i in range(16)))
    buffers = []
    inline = pickle.dumps(sent, protocol=5, buffer_callback=buffers.append)
    wire_bytes = len(inline) + sum(b.raw().nbytes for b in buffers)
    atom37_bytes = sum(p.coords.nbytes + p.atom_mask.nbytes + p.plddt.nbytes + p.pae.nbytes for p in sent.predictions)
    assert len(buffers) <= 6 and wire_bytes < atom37_bytes / 2  # the [L, L] PAE is most of what is left
    received = _over_the_wire(sent)
    assert all((p.coords[~p.atom_mask] == 0).all() for p in received.predictions)


def test_writers_render_the_same_files_from_what_crossed_the_wire():
    """Even for a predictor that leaves junk at absent atoms (ESMFold leaves 0): the files only use real atoms."""
    sequence = "MKVXLAAGIVGLLW"
    sent = _prediction("p1", sequence, 5, absent=-3.25)
    (received,) = _over_the_wire(_shard_predictions(sent)).predictions
    entry = _entry("SM-P1-F1", sequence, "p1")
    provenance, created = PROVENANCE, CREATED
    assert to_mmcif(received, entry, provenance, created=created) == to_mmcif(sent, entry, provenance, created=created)
    assert to_pae_json(received) == to_pae_json(sent)
    assert to_confidence_json(received) == to_confidence_json(sent)
