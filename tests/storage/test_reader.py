"""storage.reader: what is committed, looked up for the entries a build plans (not the whole database)."""

from __future__ import annotations

from fake_database import entry, random_prediction, write_database

from structome.models.types import PredictionRequest
from structome.storage.layout import DatabaseLayout
from structome.storage.reader import committed_entries

SEQUENCES = {f"P{i}": "MKVLAAGIVGLLW"[: 6 + i] for i in range(1, 6)}


def test_committed_entries_answers_for_the_ids_asked_only(tmp_path):
    entries = [entry(f"SM-{acc}-F1", acc, seq, f"p-{acc}") for acc, seq in SEQUENCES.items()]
    predictions = [random_prediction(PredictionRequest(e.prediction_id, e.sequence), i) for i, e in enumerate(entries)]
    layout = write_database(tmp_path / "db", entries, predictions, shard_size=2)  # 3 shards
    assert len(layout.table_files("entries")) == 3
    asked = ["SM-P2-F1", "SM-P5-F1", "SM-P9-F1", "SM-P2-F1"]  # one unknown, one twice
    assert committed_entries(layout, asked) == {"SM-P2-F1": "p-P2", "SM-P5-F1": "p-P5"}
    assert committed_entries(layout, []) == {}
    assert committed_entries(DatabaseLayout(tmp_path / "empty"), asked) == {}
