"""How many predictor actors a cluster gets, on which device, with which options (no Ray needed)."""

from __future__ import annotations

import pytest

from jobs.runner import CPU_BATCH_TOKENS, GPU_BATCH_TOKENS, RunnerSettings, plan_workers


def test_one_actor_per_gpu_and_fractions_share_a_gpu():
    pool = plan_workers(RunnerSettings(), {"CPU": 64, "GPU": 8}, shards=100)
    assert (pool.count, pool.device, pool.actor_options["num_gpus"]) == (8, "cuda", 1.0)
    assert pool.batch_tokens == GPU_BATCH_TOKENS
    half = plan_workers(RunnerSettings(gpus_per_worker=0.5), {"CPU": 64, "GPU": 8}, shards=100)
    assert half.count == 16 and half.actor_options["num_gpus"] == 0.5


def test_cpu_only_clusters_get_one_actor_per_four_cpus_using_the_cores():
    pool = plan_workers(RunnerSettings(), {"CPU": 16}, shards=100)
    assert (pool.count, pool.device, pool.threads) == (4, "cpu", 4)
    assert "num_gpus" not in pool.actor_options and pool.batch_tokens == CPU_BATCH_TOKENS
    assert plan_workers(RunnerSettings(), {"CPU": 2}, shards=100).count == 1


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
