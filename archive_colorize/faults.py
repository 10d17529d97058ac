"""Named crash points, so the reliability suite can SIGKILL a real run at exact moments.

`ARCHIVE_COLORIZE_CRASH_AT=<point>[:<n>]` makes the process kill itself (SIGKILL: no
cleanup, no `finally`, like a lost node) the n-th time it passes `<point>`. Unset, as in
every real run, a crash point is one string comparison.
"""

from __future__ import annotations

import os
import signal

POINTS = ("lock-acquired", "progress-written", "before-compact", "compacted")
_seen: dict[str, int] = {}


def crash_point(name: str) -> None:
    spec = os.environ.get("ARCHIVE_COLORIZE_CRASH_AT")
    if not spec:
        return
    point, _, n = spec.partition(":")
    if point != name:
        return
    _seen[name] = _seen.get(name, 0) + 1
    if _seen[name] >= int(n or 1):
        os.kill(os.getpid(), signal.SIGKILL)
