"""One writer per OUT: the lock is taken by an exclusive create (O_EXCL locally, a
conditional PUT on S3), never by check-then-write, and released only by its owner."""

import json
import threading

import fsspec
import pytest

from archive_colorize.errors import ConfigError
from archive_colorize.run.lock import STALE_LOCK_S, OutputLock


def _race(fs, root, trials):
    """Two runs start together, `trials` times: -> how many got the lock each time."""
    winners = []
    for t in range(trials):
        out = f"{root}/out{t}"
        fs.makedirs(out, exist_ok=True)
        locks, got, gate = [OutputLock(fs, out), OutputLock(fs, out)], [], threading.Barrier(2)

        def take(lock):
            gate.wait()
            try:
                lock.acquire()
                got.append(lock)
            except ConfigError:
                pass

        threads = [threading.Thread(target=take, args=(lk,)) for lk in locks]
        [th.start() for th in threads]
        [th.join() for th in threads]
        winners.append(len(got))
        for lk in got:
            lk.release()
    return winners


def test_two_runs_started_together_never_both_hold_the_lock(tmp_path):
    assert _race(fsspec.filesystem("file"), str(tmp_path), 30) == [1] * 30


def test_two_runs_never_both_hold_an_s3_lock(s3):
    s3.mkdir("locks")
    assert _race(s3, "locks", 10) == [1] * 10


def test_release_removes_only_its_own_lock_and_a_dead_runs_lock_is_taken_over(tmp_path):
    fs = fsspec.filesystem("file")
    first = OutputLock(fs, str(tmp_path))
    first.acquire()
    path = tmp_path / "_lock.json"
    # the first run stalls for longer than STALE_LOCK_S; another host takes its lock over
    held = json.loads(path.read_text())
    path.write_text(json.dumps({**held, "host": "elsewhere", "time": held["time"] - STALE_LOCK_S - 1}))
    second = OutputLock(fs, str(tmp_path))
    second.acquire()
    mine = json.loads(path.read_text())["token"]
    assert mine == second.me["token"] != first.me["token"]
    first.release()  # the stalled run ends: it must not delete the lock that is no longer its own
    first.refresh()
    assert json.loads(path.read_text())["token"] == mine
    with pytest.raises(ConfigError, match=r"^another run \(pid \d+ on .+\) is writing to "):
        OutputLock(fs, str(tmp_path)).acquire()
    second.release()
    assert not path.exists()
