"""A run on a real multi-node Ray cluster on loopback (ray.cluster_utils.Cluster: three
nodes, each with its own CPU), in a process of its own: a local OUT is refused with one
line per path, an S3 OUT completes with outputs written by more than one node, and a
declared shared file system is proven by every node before any work."""

import json
import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq

from .conftest import ROOT, sample

SCRIPT = r"""
import json, sys
import ray
from ray.cluster_utils import Cluster
from archive_colorize import RunOptions
from archive_colorize.errors import ColorizeError
from archive_colorize.run.pipeline import run

cfg = json.loads(sys.argv[1])
cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
for _ in range(2):
    cluster.add_node(num_cpus=1)
cluster.wait_for_nodes()
out = {}
for name, opts in cfg.items():
    try:
        s = run(RunOptions(address=cluster.address, **opts))
        out[name] = {"done": s.done, "failed": s.failed, "out": s.out}
    except ColorizeError as e:
        out[name] = {"error": str(e), "hint": e.hint}
print("RESULT " + json.dumps(out))
ray.shutdown()
cluster.shutdown()
"""


def _on_cluster(runs: dict, cwd) -> dict:
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "HOME": str(cwd)}
    r = subprocess.run([sys.executable, "-c", SCRIPT, json.dumps(runs)], capture_output=True, text=True,
                       timeout=900, cwd=cwd, env=env)  # fmt: skip
    line = [x for x in r.stdout.splitlines() if x.startswith("RESULT ")]
    assert line, r.stdout[-3000:] + r.stderr[-3000:]
    return json.loads(line[0][len("RESULT ") :])


def test_a_run_on_three_nodes(tmp_path, s3, s3_server, weights_path):
    s3.mkdir("nodes")
    names = ["astronaut", "chelsea", "coffee", "rocket"] * 3
    for i, n in enumerate(names):
        s3.pipe(f"nodes/scans/{i:02d}.jpg", sample(f"{n}.jpg").read_bytes())
    s3.pipe("nodes/w.safetensors", weights_path.read_bytes())
    table = pa.table(
        {
            "id": [f"{i:02d}" for i in range(len(names))],
            "uri": [f"s3://nodes/scans/{i:02d}.jpg" for i in range(len(names))],
        }
    )
    with s3.open("nodes/m.parquet", "wb") as f:
        pq.write_table(table, f)
    local, scan = tmp_path / "local.parquet", tmp_path / "coffee.jpg"
    scan.write_bytes(sample("coffee.jpg").read_bytes())
    pq.write_table(pa.table({"id": ["a"], "uri": [str(scan)]}), local)
    weights = tmp_path / "w.safetensors"
    weights.write_bytes(weights_path.read_bytes())
    common = {"working_size": 64, "batch_size": 2, "actors": 1, "storage_options": s3_server}
    s3_run = {
        "manifest": "s3://nodes/m.parquet",
        "out": "s3://nodes/out",
        "weights": "s3://nodes/w.safetensors",
    }
    runs = {
        "local": {"manifest": str(local), "out": str(tmp_path / "out"), "weights": str(weights), **common},
        "s3": {**s3_run, **common},
        "shared": {"manifest": str(local), "out": str(tmp_path / "shared-out"), "weights": str(weights),
                   "shared_fs": [str(tmp_path)], **common},
    }  # fmt: skip
    got = _on_cluster(runs, tmp_path)
    assert got["local"]["error"].splitlines() == [
        "this Ray cluster has 3 node(s), and not every node can see what this run reads and writes:",
        f"  the manifest {local} is on this machine's disk (Ray's readers run on any node)",
        f"  the output {tmp_path / 'out'} is on this machine's disk, which the other nodes do not see",
        f"  --weights {weights} is on this machine's disk",
        f"  1 scan uri(s) are local paths (the first: {scan})",
    ]
    assert "--shared-fs PREFIX" in got["local"]["hint"]
    assert not (tmp_path / "out").exists()  # refused before any work: not even the lock
    assert (got["s3"]["done"], got["s3"]["failed"]) == (12, 0), got["s3"]
    rows = pq.read_table(s3.open("nodes/out/results.parquet", "rb")).to_pylist()
    assert all(s3.exists(r["output_uri"]) for r in rows)
    nodes = {r["node"] for r in rows}
    assert len(nodes) >= 2, nodes  # outputs written by more than one node
    assert (got["shared"].get("done"), got["shared"].get("failed")) == (1, 0), got["shared"]
    assert not list((tmp_path / "shared-out").glob("_shared-fs-check-*"))  # the marker is gone
