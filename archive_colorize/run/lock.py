"""One writer per output location: OUT/_lock.json names the run that holds it.

A second run is refused while the holder lives. A lock left by a dead run is taken over:
on the same host when its pid is gone, on another host when it has not been refreshed
for STALE_LOCK_S. The holder refreshes it with every progress file and on a timer, so a
slow start (a cold cluster, GPU nodes still joining) does not lose it.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time

from archive_colorize.errors import ConfigError
from archive_colorize.run.options import LOCK
from archive_colorize.core.storage import write_json

STALE_LOCK_S = 600
REFRESH_S = STALE_LOCK_S / 4


class OutputLock:
    def __init__(self, fs, out_root: str):
        self.fs, self.path = fs, f"{out_root}/{LOCK}"
        self.out_root = out_root
        self.me = {"pid": os.getpid(), "host": socket.gethostname(), "time": time.time()}

    def _holder_alive(self, held: dict) -> bool:
        if held.get("host") != self.me["host"]:
            return time.time() - float(held.get("time", 0)) < STALE_LOCK_S
        try:
            os.kill(int(held.get("pid", -1)), 0)
            return True
        except (ProcessLookupError, ValueError):
            return False
        except PermissionError:  # alive, under another user
            return True

    def acquire(self) -> None:
        if self.fs.exists(self.path):
            try:
                with self.fs.open(self.path, "rb") as f:
                    held = json.loads(f.read())
            except Exception:
                held = {}
            if self._holder_alive(held) and held.get("pid") != self.me["pid"]:
                raise ConfigError(
                    f"another run (pid {held.get('pid')} on {held.get('host')}) is writing to {self.out_root}",
                    hint="wait for it to finish; a lock left by a dead run is taken over automatically",
                )
        write_json(self.fs, self.path, self.me)
        self._stop = threading.Event()
        self._timer = threading.Thread(target=self._keep_fresh, name="archive-colorize-lock", daemon=True)
        self._timer.start()

    def _keep_fresh(self) -> None:
        while not self._stop.wait(REFRESH_S):
            try:
                self.refresh()
            except Exception:  # a failed refresh is retried next time; progress writes refresh too
                pass

    def refresh(self) -> None:
        self.me["time"] = time.time()
        write_json(self.fs, self.path, self.me)

    def release(self) -> None:
        if getattr(self, "_timer", None) is not None:
            self._stop.set()
            self._timer.join()
        try:
            self.fs.rm(self.path)
        except Exception:
            pass
