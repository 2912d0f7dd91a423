"""cluster.yaml passes Ray's own cluster-launcher checks and has what a structome build on a GPU cluster needs."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import jsonschema
import pytest
import ray.autoscaler
import yaml

# No public Ray API validates a cluster config without a cloud account (ray.autoscaler.sdk.bootstrap_config calls the
# provider): these two are what `ray up` runs first, so the test keeps them.
from ray.autoscaler._private.util import prepare_config, validate_config

ROOT = Path(__file__).resolve().parents[2]
CLUSTER_YAML = ROOT / "cluster.yaml"
SCHEMA = json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())
SHARED = "/mnt/structome"  # where every node mounts the shared storage for inputs and the database


@pytest.fixture
def config() -> dict:
    return yaml.safe_load(CLUSTER_YAML.read_text())


def validate(config: dict) -> None:
    """What `ray up` checks: Ray's JSON schema on the file, then on the config merged with the provider's defaults."""
    jsonschema.validate(config, SCHEMA)
    validate_config(prepare_config(copy.deepcopy(config)))


def commands(config: dict, *keys: str) -> str:
    return "\n".join(command for key in keys for command in config.get(key, []))


def test_cluster_yaml_passes_rays_validation(config):
    validate(config)


@pytest.mark.parametrize(
    "break_it",
    [
        lambda c: c.update(gpu_workers=2),  # unknown top-level key
        lambda c: c.update(max_workers="eight"),  # wrong type
        lambda c: c["available_node_types"]["gpu_worker"].update(gpus=1),  # unknown node-type key
        lambda c: c["available_node_types"]["gpu_worker"].update(resources="GPU=1"),  # wrong type
        lambda c: c.update(setup_commands="pip install -e /opt/structome"),  # a string, not a list
        lambda c: c.update(head_node_type="no_such_type"),
    ],
    ids=["unknown-key", "wrong-type", "unknown-node-key", "resources-type", "commands-type", "head-type"],
)
def test_broken_copies_fail_validation(config, break_it):
    broken = copy.deepcopy(config)
    break_it(broken)
    with pytest.raises((jsonschema.ValidationError, ValueError)):
        validate(broken)


def test_head_and_gpu_worker_node_types(config):
    types = config["available_node_types"]
    assert config["head_node_type"] in types
    gpu_types = [t for t in types.values() if t.get("resources", {}).get("GPU", 0) >= 1]
    assert gpu_types and all(t["max_workers"] >= 1 for t in gpu_types)
    assert any(t["min_workers"] >= 1 for t in gpu_types)  # `build` sizes its pool from the GPUs up at its start


def test_project_is_mounted_and_installed(config):
    mounted = [remote for remote, local in config["file_mounts"].items() if (ROOT / local).resolve() == ROOT]
    assert mounted, "file_mounts must carry the project root"
    setup = commands(config, "setup_commands", "worker_setup_commands", "head_setup_commands")
    assert any(f"pip install -e {remote}" in setup or f"pip install {remote}" in setup for remote in mounted)
    assert ".venv" in config.get("rsync_exclude", [])  # never copy a local environment to the nodes


def test_shared_storage_for_the_database(config):
    mount = commands(config, "initialization_commands", "setup_commands")
    assert "mount" in mount and SHARED in mount
    header = CLUSTER_YAML.read_text().split("cluster_name:")[0]
    assert "structome submit --address" in header and f"--db {SHARED}/" in header
