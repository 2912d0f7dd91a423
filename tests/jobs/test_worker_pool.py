"""How many predictor actors a cluster gets, on which device, with which options, and what they load with
(no Ray needed)."""

from __future__ import annotations

import pytest

from structome.jobs.build.runner import ModelSpec, batcher_for, plan_workers, with_weights_digest
from structome.jobs.build.settings import RunnerSettings
from structome.models.esmfold import weights_sha256
from structome.models.types import EsmFoldSettings


def test_one_actor_per_gpu_and_fractions_share_a_gpu():
    pool = plan_workers(RunnerSettings(), {"CPU": 64, "GPU": 8}, shards=100)
    assert (pool.count, pool.device, pool.actor_options["num_gpus"]) == (8, "cuda", 1.0)
    half = plan_workers(RunnerSettings(gpus_per_worker=0.5), {"CPU": 64, "GPU": 8}, shards=100)
    assert half.count == 16 and half.actor_options["num_gpus"] == 0.5


def test_cpu_only_clusters_get_one_actor_per_four_cpus_using_the_cores_a_writer_leaves():
    """Folding threads leave one CPU to the writers: torch threads that share cores with them spin and stall."""
    pool = plan_workers(RunnerSettings(), {"CPU": 16}, shards=100)
    assert (pool.count, pool.device, pool.threads) == (4, "cpu", 3)
    assert "num_gpus" not in pool.actor_options
    laptop = plan_workers(RunnerSettings(), {"CPU": 2}, shards=100)
    assert (laptop.count, laptop.threads) == (1, 1)
    assert plan_workers(RunnerSettings(), {"CPU": 1}, shards=100).threads == 1


def test_never_more_actors_than_shards_and_explicit_choices_win():
    assert plan_workers(RunnerSettings(), {"CPU": 64, "GPU": 8}, shards=3).count == 3
    assert plan_workers(RunnerSettings(workers=2), {"CPU": 64, "GPU": 8}, shards=100).count == 2
    forced = plan_workers(RunnerSettings(device="cuda"), {"CPU": 8}, shards=100)  # GPU nodes not up yet
    assert forced.device == "cuda" and forced.actor_options["num_gpus"] == 1.0 and forced.count == 1
    assert plan_workers(RunnerSettings(device="cpu"), {"CPU": 8, "GPU": 2}, shards=100).device == "cpu"
    custom = plan_workers(RunnerSettings(worker_resources={"accelerator": 1}), {"CPU": 8}, shards=9)
    assert custom.actor_options["resources"] == {"accelerator": 1}


def test_bad_settings_are_refused():
    with pytest.raises(ValueError):
        RunnerSettings(device="tpu")
    with pytest.raises(ValueError):
        RunnerSettings(gpus_per_worker=0)


def test_workers_get_the_drivers_weights_hash_when_the_driver_sees_the_weights(tiny_weights, tmp_path):
    spec = ModelSpec("esmfold-tiny", str(tiny_weights), EsmFoldSettings(), settings_key="key")
    assert with_weights_digest(spec).weights_digest.sha256 == weights_sha256(tiny_weights)
    unseen = ModelSpec("esmfold-tiny", str(tmp_path / "on-the-workers-only"), EsmFoldSettings(), settings_key="key")
    assert with_weights_digest(unseen) == unseen  # the workers hash their weights themselves


def test_cpu_workers_plan_batches_by_the_cost_model_with_the_measured_cap_and_the_token_cap():
    spec = ModelSpec("esmfold-tiny", None, EsmFoldSettings(num_recycles=1), "key")
    batcher = batcher_for(spec, "cpu", batch_tokens=None)
    short = batcher.batch([30] * 8).batches  # batching pays on a CPU for short sequences only
    assert len(short) < 8
    assert all(len(b.indices) == 1 for b in batcher.batch([190] * 4).batches)  # past the measured cap: alone
    capped = batcher_for(spec, "cpu", batch_tokens=60).batch([30] * 8).batches
    assert all(len(b.indices) * b.padded_length <= 60 for b in capped)


def test_a_shards_deadline_is_a_multiple_of_its_planned_model_time_and_never_under_the_floor():
    from structome.pipelines.calibration import find_calibration, load_calibrations
    from structome.pipelines.cost_model import CostModel
    from structome.pipelines.estimate import SLOWEST_ASSUMED_FLOPS, planned_shard_seconds

    settings = RunnerSettings(shard_deadline_factor=10, shard_deadline_floor_s=60)
    assert settings.shard_deadline_s(1.0) == 60 and settings.shard_deadline_s(30.0) == 300
    cost = CostModel.for_preset("esmfold", 4)
    planned = planned_shard_seconds([400, 300], cost, None, "cuda")  # no GPU calibration: the slowest assumed
    assert planned == pytest.approx((cost.flops(400) + cost.flops(300)) / SLOWEST_ASSUMED_FLOPS["cuda"])
    tiny = CostModel.for_preset("esmfold-tiny", 0)
    measured = find_calibration(load_calibrations(), "esmfold-tiny", "cpu")
    assert planned_shard_seconds([50], tiny, measured, "cpu") == pytest.approx(measured.seconds(tiny.flops(50)))
    with pytest.raises(ValueError, match="deadline"):
        RunnerSettings(shard_deadline_factor=0.5)
