"""Named crash points, so the reliability suite can kill a real run at exact moments.

`ARCHIVE_COLORIZE_CRASH_AT=<point>[:<n>]` makes the process kill itself (SIGKILL: no
cleanup, no `finally`, like a lost node) the n-th time it passes `<point>`.
`ARCHIVE_COLORIZE_STOP_AT=<point>[:<n>]` freezes it there instead (SIGSTOP), so that a test
can kill it from outside at a known moment, without racing a wall clock.
`ARCHIVE_COLORIZE_RAISE_AT=<point>[:<n>]` raises a simulated CUDA error there instead, to
test that a device fault restarts the actor rather than failing rows.
`ARCHIVE_COLORIZE_CRASH_ONCE=<file>` makes any of these fire once across all processes
(the first to create the file), so that a restarted Ray actor does not crash again.

`ARCHIVE_COLORIZE_PASSTHROUGH_MODEL=1` replaces the network by a constant colour: the CPU
stages' own ceiling, for benchmarks (pipelines/gpu_node.py), never for a real run.

Ray actors do not inherit the driver's environment: the driver hands `armed()` to them.
Unset, as in every real run, a crash point is one dictionary lookup.
"""

from __future__ import annotations

import os
import signal

_VARS = (
    "ARCHIVE_COLORIZE_CRASH_AT",
    "ARCHIVE_COLORIZE_STOP_AT",
    "ARCHIVE_COLORIZE_RAISE_AT",
    "ARCHIVE_COLORIZE_CRASH_ONCE",
    "ARCHIVE_COLORIZE_PASSTHROUGH_MODEL",
)
_seen: dict[str, int] = {}


def armed() -> dict[str, str]:
    """The crash settings of this process, to pass to processes it starts elsewhere."""
    return {k: os.environ[k] for k in _VARS if os.environ.get(k)}


def _due(spec: str | None, name: str) -> bool:
    if not spec:
        return False
    point, _, n = spec.partition(":")
    return point == name and _seen.get(name, 0) >= int(n or 1)


def crash_point(name: str, settings: dict[str, str] | None = None) -> None:
    env = os.environ if settings is None else settings
    crash, stop, fail = (env.get(f"ARCHIVE_COLORIZE_{k}_AT") for k in ("CRASH", "STOP", "RAISE"))
    if not crash and not stop and not fail:
        return
    _seen[name] = _seen.get(name, 0) + 1
    sig = signal.SIGKILL if _due(crash, name) else signal.SIGSTOP if _due(stop, name) else None
    if sig is None and not _due(fail, name):
        return
    once = env.get("ARCHIVE_COLORIZE_CRASH_ONCE")
    if once:
        try:
            os.close(os.open(once, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            return
    if sig is None:
        raise RuntimeError(f"CUDA error: an illegal memory access was encountered (simulated at {name})")
    os.kill(os.getpid(), sig)
