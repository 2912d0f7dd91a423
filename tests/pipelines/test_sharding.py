"""Length-sorted shards and residue-budget batches."""

from __future__ import annotations

import pytest

from models.types import Entry, PredictionRequest
from pipelines.sharding import plan_batches, plan_shards


def _entry(entry_id: str, sequence: str, prediction_id: str) -> Entry:
    return Entry(
        entry_id=entry_id, record_id=entry_id, source_file="x.fasta", accession=entry_id, sequence=sequence,
        fragment=1, start=1, end=len(sequence), sequence_checksum="0" * 16, sequence_md5="0" * 32,
        prediction_id=prediction_id,
    )


def test_batches_respect_the_padded_budget_never_a_count():
    lengths = [300, 200, 200, 100, 90, 50, 50, 50, 10]
    batches = plan_batches(lengths, batch_tokens=600)
    assert [b for batch in batches for b in batch] == list(range(len(lengths)))
    for batch in batches:
        assert len(batch) * lengths[batch[0]] <= 600 or len(batch) == 1
    assert batches == [[0, 1], [2, 3, 4], [5, 6, 7, 8]]


def test_a_sequence_longer_than_the_budget_runs_alone():
    assert plan_batches([5000, 10, 10], batch_tokens=100) == [[0], [1, 2]]


def test_batches_need_sorted_lengths():
    with pytest.raises(ValueError):
        plan_batches([10, 20], batch_tokens=100)


def test_shards_are_length_sorted_and_keep_entries_with_their_prediction():
    requests = [PredictionRequest(f"p{n}", "A" * (n % 100)) for n in (5, 40, 12, 140, 7)]
    entries = [_entry(f"E{i}", r.sequence, r.prediction_id) for i, r in enumerate(requests)]
    entries.append(_entry("E-dup", "A" * 12, "p12"))  # shares the prediction of E2
    shards = plan_shards(entries, requests, shard_size=2)
    lengths = [len(r.sequence) for s in shards for r in s.requests]
    assert lengths == sorted(lengths, reverse=True)
    assert [len(s.requests) for s in shards] == [2, 2, 1]
    holder = next(s for s in shards if any(r.prediction_id == "p12" for r in s.requests))
    assert {"E2", "E-dup"} <= {e.entry_id for e in holder.entries}
    assert sum(len(s.entries) for s in shards) == len(entries)


def test_shard_ids_are_content_addresses():
    requests = [PredictionRequest("a", "MK"), PredictionRequest("b", "MKV")]
    entries = [_entry("A", "MK", "a"), _entry("B", "MKV", "b")]
    first = plan_shards(entries, requests, 1)
    again = plan_shards(list(reversed(entries)), list(reversed(requests)), 1)
    assert [s.shard_id for s in first] == [s.shard_id for s in again]
    assert len({s.shard_id for s in first}) == 2
