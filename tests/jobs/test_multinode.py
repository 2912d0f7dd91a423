"""Two Ray nodes on one machine, each with its own memory limits and one 'accelerator' (a custom resource
standing in for a GPU): shards run on both nodes and land in one database."""

from __future__ import annotations

import pytest
import ray
from ray.cluster_utils import Cluster

from structome.jobs.build.job import BuildRequest, run_build
from structome.jobs.build.settings import RunnerSettings
from structome.models.types import EsmFoldSettings
from structome.pipelines.settings import BuildSettings
from structome.storage import catalog
from structome.storage.layout import DatabaseLayout

NODE = {"num_cpus": 2, "memory": 2 * 1024**3, "object_store_memory": 256 * 1024**2}


@pytest.fixture()
def two_node_cluster():
    cluster = Cluster(initialize_head=True, head_node_args={**NODE, "resources": {"accelerator": 1}})
    cluster.add_node(**NODE, resources={"accelerator": 1})
    cluster.wait_for_nodes()
    ray.init(address=cluster.address)
    try:
        yield cluster
    finally:
        ray.shutdown()
        cluster.shutdown()


@pytest.mark.slow
def test_shards_run_on_both_nodes_into_one_database(two_node_cluster, tmp_path):
    fasta = tmp_path / "in.fasta"
    sequences = {f"N{i}": "MKTAYIAKQRQISFVKSHFSRQLEERLGLIEVQAPILSRVG"[: 16 + 3 * i] for i in range(8)}
    fasta.write_text("".join(f">{name}\n{sequence}\n" for name, sequence in sequences.items()))
    assert len([n for n in ray.nodes() if n["Alive"]]) == 2
    report = run_build(
        BuildRequest(
            inputs=(str(fasta),),
            db=tmp_path / "db",
            model_settings=EsmFoldSettings(num_recycles=0),
            build_settings=BuildSettings(shard_size=1),
            runner=RunnerSettings(workers=2, worker_resources={"accelerator": 1}, progress=False),
        )
    )
    nodes = {label.split("/")[0] for label in report["workers"]}
    assert len(nodes) == 2, report["workers"]  # one actor per accelerator, one accelerator per node
    assert all(figures["shards"] >= 1 for figures in report["workers"].values())
    rows = catalog.query(DatabaseLayout(tmp_path / "db"), "SELECT entryId FROM entries").column("entryId")
    assert sorted(rows.to_pylist()) == sorted(f"SM-{name}-F1" for name in sequences)
