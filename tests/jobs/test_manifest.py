"""Build manifests and event logs name their format; readers take old files as version 1 and refuse newer ones."""

from __future__ import annotations

import json

import pytest
from fake_database import PROVENANCE

from structome.jobs.build.manifest import ManifestWriter, read_progress
from structome.pipelines.build import BuildPlan
from structome.pipelines.settings import BuildSettings
from structome.storage.formats import FormatError
from structome.storage.layout import DatabaseLayout

BUILD = "20261202T000000Z-abcdef"


@pytest.fixture()
def layout(tmp_path) -> DatabaseLayout:
    layout = DatabaseLayout(tmp_path / "db")
    layout.create()
    plan = BuildPlan(
        build_id=BUILD,
        inputs=(),
        settings=BuildSettings(),
        provenance=PROVENANCE,
        record_count=0,
        shards=(),
        ingest_failures=(),
        entries_skipped=0,
    )
    writer = ManifestWriter(layout, plan)
    writer.record("s1", "started")
    writer.record("s1", "committed")
    writer.close()
    return layout


def _rewrite(layout: DatabaseLayout, relative: str, change) -> None:
    lines = [json.dumps(change(json.loads(line))) for line in layout.read_lines(relative)]
    layout.write_text_atomic("".join(line + "\n" for line in lines), relative)


def test_manifest_and_events_name_their_format(layout):
    assert json.loads(layout.read_text(layout.build_manifest(BUILD)))["format"] == "structome-manifest/1"
    events = [json.loads(line) for line in layout.read_lines(layout.build_events(BUILD))]
    assert [e["format"] for e in events] == ["structome-events/1"] * 2
    assert read_progress(layout, BUILD).shards_committed == 1


def test_files_from_before_formats_are_read_as_version_1(layout):
    def drop(document: dict) -> dict:
        return {k: v for k, v in document.items() if k != "format"}

    _rewrite(layout, layout.build_manifest(BUILD), drop)
    _rewrite(layout, layout.build_events(BUILD), drop)
    assert read_progress(layout, BUILD).shards_committed == 1


@pytest.mark.parametrize("which", ["build_manifest", "build_events"])
def test_a_newer_format_is_refused(layout, which):
    relative = getattr(layout, which)(BUILD)
    _rewrite(layout, relative, lambda document: {**document, "format": document["format"].replace("/1", "/2")})
    with pytest.raises(FormatError, match=rf"{relative} is structome-\w+/2, newer than .*upgrade structome"):
        read_progress(layout, BUILD)


def test_a_file_of_another_kind_is_refused(layout):
    _rewrite(layout, layout.build_manifest(BUILD), lambda document: {**document, "format": "structome-export/1"})
    with pytest.raises(FormatError, match="is not a structome-manifest file"):
        read_progress(layout, BUILD)
