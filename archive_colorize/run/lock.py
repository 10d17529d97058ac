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
import uuid

from archive_colorize.errors import ConfigError
from archive_colorize.run.options import LOCK
from archive_colorize.core.storage import TEMP_PREFIX, is_local, write_json

RETRY_HINT = "run it again in a moment"

STALE_LOCK_S = 600
REFRESH_S = STALE_LOCK_S / 4


class OutputLock:
    """Taken by an exclusive create, never by check-then-write: a local file opened with
    O_EXCL, an S3 object written with `If-None-Match: *`. Each holder has its own token;
    refresh and release touch the lock only while it still carries that token."""

    def __init__(self, fs, out_root: str):
        self.fs, self.path = fs, f"{out_root}/{LOCK}"
        self.out_root = out_root
        self.me = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "time": time.time(),
            "token": uuid.uuid4().hex,
        }

    def _holder_alive(self, held: dict) -> bool:
        if held.get("host") == self.me["host"]:
            try:
                os.kill(int(held.get("pid", -1)), 0)
            except (ProcessLookupError, ValueError):
                return False  # its process is gone
            except PermissionError:  # alive, under another user
                pass
        # alive by its heartbeat: a lock not refreshed for STALE_LOCK_S is a dead run's
        return time.time() - float(held.get("time", 0)) < STALE_LOCK_S

    def _read(self) -> dict | None:
        try:
            self.fs.invalidate_cache(self.path)  # s3fs caches listings: read the object as it is now
            with self.fs.open(self.path, "rb") as f:
                return json.loads(f.read())
        except FileNotFoundError:
            return None
        except Exception:
            return {}  # unreadable: treated as a dead run's

    def _create(self) -> bool:
        """Write the lock only if there is none; False if another got there first."""
        data = json.dumps(self.me).encode()
        if is_local(self.fs):
            # written whole to a temporary, then hard-linked into place: the link fails if the
            # lock exists, and no reader ever sees a lock half written (an empty one read as a
            # dead run's let two runs in, 1 race in 30)
            d = os.path.dirname(self.path)
            os.makedirs(d, exist_ok=True)
            tmp = os.path.join(d, f"{TEMP_PREFIX}lock-{self.me['token']}")
            with open(tmp, "wb") as f:
                f.write(data)
            try:
                os.link(tmp, self.path)
                return True
            except FileExistsError:
                return False
            finally:
                os.unlink(tmp)
        try:
            self.fs.pipe_file(self.path, data, mode="create")  # S3: a conditional PUT
            return True
        except FileExistsError:  # s3fs's word for 412 Precondition Failed
            return False
        except TypeError:  # a filesystem without exclusive create: the best it can do
            if self.fs.exists(self.path):
                return False
            write_json(self.fs, self.path, self.me)
            return True
        except Exception:
            self.fs.invalidate_cache(self.path)  # a cached listing must not hide the other's lock
            if self.fs.exists(self.path):
                return False
            raise

    def acquire(self) -> None:
        for _ in range(5):
            if self._create():
                break
            held = self._read()
            if held is None:
                continue  # released between our create and our read: try again
            if self._holder_alive(held) and held.get("token") != self.me["token"]:
                raise ConfigError(
                    f"another run (pid {held.get('pid')} on {held.get('host')}) is writing to {self.out_root}",
                    hint="wait for it to finish; a lock left by a dead run is taken over automatically",
                )
            self._remove_if_still(held)  # a dead run's: take it over
        else:
            raise ConfigError(
                f"cannot take the lock of {self.out_root}: other runs keep taking it", hint=RETRY_HINT
            )
        self._stop = threading.Event()
        self._timer = threading.Thread(target=self._keep_fresh, name="archive-colorize-lock", daemon=True)
        self._timer.start()

    def _remove_if_still(self, held: dict) -> None:
        """Remove the lock only if it is still the one we judged (another run may have
        taken it over meanwhile: its new lock has another token)."""
        now = self._read()
        if now is not None and now.get("token") == held.get("token"):
            try:
                self.fs.rm(self.path)
            except FileNotFoundError:
                pass

    def _keep_fresh(self) -> None:
        while not self._stop.wait(REFRESH_S):
            try:
                self.refresh()
            except Exception:  # a failed refresh is retried next time; progress writes refresh too
                pass

    def refresh(self) -> None:
        held = self._read()
        if held is not None and held.get("token") != self.me["token"]:
            return  # no longer ours (taken over after a long stall): never write over it
        self.me["time"] = time.time()
        write_json(self.fs, self.path, self.me)

    def release(self) -> None:
        if getattr(self, "_timer", None) is not None:
            self._stop.set()
            self._timer.join()
        held = self._read()
        if held is not None and held.get("token") == self.me["token"]:  # only our own lock
            try:
                self.fs.rm(self.path)
            except Exception:
                pass
