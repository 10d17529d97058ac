"""A run on a cluster of several nodes: every node must see what the run reads and writes.

On one machine a local OUT, local scans and a local --weights path are fine. On a cluster,
each node has its own disk: outputs written to a "local" OUT scatter over the workers'
disks, and results.parquet on the driver points at files that are not there. So when the
cluster has more than one node, or may grow (a head with no CPUs, waiting for workers), a
local path is refused, one line each, unless the operator declares it shared
(`--shared-fs PREFIX`); and a declared share is proven: the driver writes a marker under
OUT, and a task on every node reads it back before any work. S3 and http(s) need nothing.
"""

from __future__ import annotations

import os
import re
import time
import uuid

import pyarrow.compute as pc

from archive_colorize.errors import ClusterError, ConfigError

_SCHEME = r"^[A-Za-z][A-Za-z0-9+.-]*://"
MARKER = "_shared-fs-check"


def alive_nodes(ray) -> list[dict]:
    return [n for n in ray.nodes() if n.get("Alive")]


def may_have_several_nodes(nodes: list[dict]) -> bool:
    """Several nodes now, or a head without CPUs, which is there for workers to join."""
    if len(nodes) > 1:
        return True
    return bool(nodes) and float(nodes[0].get("Resources", {}).get("CPU", 0)) == 0


def _local(path: str) -> bool:
    return path.startswith("file://") or not re.match(_SCHEME, path)


def _plain(path: str) -> str:
    return os.path.abspath(path[len("file://") :] if path.startswith("file://") else path)


def shared(path: str, prefixes) -> bool:
    p = _plain(path)
    return any(p == _plain(s).rstrip("/") or p.startswith(_plain(s).rstrip("/") + "/") for s in prefixes)


def placement_problems(out_root: str, out_local: bool, manifest, weights_source: str, prefixes) -> list[str]:
    """What the nodes could not all see, one line each."""
    problems = []
    if _local(manifest.url) and not shared(manifest.url, prefixes):
        problems.append(
            f"the manifest {manifest.url} is on this machine's disk (Ray's readers run on any node)"
        )
    if out_local and not shared(out_root, prefixes):
        problems.append(f"the output {out_root} is on this machine's disk, which the other nodes do not see")
    if weights_source and _local(weights_source) and not shared(weights_source, prefixes):
        problems.append(f"--weights {weights_source} is on this machine's disk")
    uris = manifest.column("uri")
    local = pc.invert(pc.match_substring_regex(uris, _SCHEME))
    local = pc.or_(local, pc.starts_with(uris, "file://"))
    n_local = int(pc.sum(local).as_py() or 0)
    if n_local:
        first = pc.filter(uris, local)[0].as_py()
        where = first if re.match(_SCHEME, first) or first.startswith("/") else f"{manifest.base_dir}/{first}"
        if not shared(where, prefixes):
            problems.append(f"{n_local} scan uri(s) are local paths (the first: {first})")
    return problems


def check_placement(ray, out_root: str, out_local: bool, manifest, weights_source: str, prefixes) -> int:
    """Refuse, before any work, a run whose files not every node can see; -> the node count."""
    nodes = alive_nodes(ray)
    if not may_have_several_nodes(nodes):
        return len(nodes)
    problems = placement_problems(out_root, out_local, manifest, weights_source, prefixes)
    if problems:
        raise ConfigError(
            f"this Ray cluster has {len(nodes)} node(s){' and a head with no CPUs' if len(nodes) == 1 else ''}, "
            "and not every node can see what this run reads and writes:\n  " + "\n  ".join(problems),
            hint="use s3:// (or http(s)) locations, or declare a file system mounted on every node "
            "with --shared-fs PREFIX (e.g. --shared-fs /mnt/archive)",
        )
    if out_local:
        prove_shared(ray, nodes, out_root)
    return len(nodes)


def prove_shared(ray, nodes: list[dict], out_root: str) -> None:
    """Write a marker under OUT; a task pinned to each node reads it back."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    token = uuid.uuid4().hex
    path = os.path.join(out_root, f"{MARKER}-{token}")
    with open(path, "w") as f:
        f.write(token)

    @ray.remote(num_cpus=0)
    def sees(p: str) -> str | None:
        try:
            with open(p) as f:
                return f.read()
        except OSError:
            return None

    try:
        refs = {
            n["NodeID"]: sees.options(
                scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)
            ).remote(path)
            for n in nodes
        }
        blind = [
            f"{nid} ({n.get('NodeManagerAddress')})"
            for n in nodes
            for nid in [n["NodeID"]]
            if ray.get(refs[nid]) != token
        ]
    finally:
        os.unlink(path)
    if blind:
        raise ClusterError(
            f"--shared-fs: node(s) {', '.join(blind)} cannot see {out_root}: it is not shared with them",
            hint="mount the same file system at the same path on every node, or use s3://",
        )


class NodeWatch:
    """Nodes that leave or join while a run streams, as lines for the screen. Ray reruns a
    lost node's work on the others by itself; the note says why the run slowed, and why
    results.parquet names a node that is gone."""

    def __init__(self, ray, every: float = 10.0):
        self.ray, self.every, self.checked = ray, every, time.monotonic()
        self.known = self._alive()

    def _alive(self) -> dict[str, str]:
        return {n["NodeID"]: n.get("NodeManagerAddress", "?") for n in alive_nodes(self.ray)}

    def changes(self, now: bool = False) -> list[str]:
        if not now and time.monotonic() - self.checked < self.every:
            return []
        self.checked = time.monotonic()
        alive = self._alive()
        left = [f"node {n[:12]} ({a}) left the cluster: Ray retries its work on the other nodes"
                for n, a in self.known.items() if n not in alive]  # fmt: skip
        joined = [f"node {n[:12]} ({a}) joined the cluster" for n, a in alive.items() if n not in self.known]
        self.known = alive
        return left + joined
