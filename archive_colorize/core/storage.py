"""URLs at the edges: resolve once to (filesystem, path); atomic writes everywhere.

Local writes go to a temporary file in the same directory and are renamed into place, so
a crash leaves either the whole file or nothing. On S3 a PUT is already all-or-nothing.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import time

import fsspec
from fsspec.core import url_to_fs

from archive_colorize.errors import StorageError

# Remote calls that fail for a moment (a dropped connection, a 503) are retried with backoff.
RETRIES = 4
_UMASK = os.umask(0o022)
os.umask(_UMASK)
BACKOFF_S = 0.5


def resolve(url: str, storage_options: dict | None = None):
    """-> (fs, path). Local paths come back absolute."""
    fs, path = url_to_fs(str(url), **(storage_options or {}))
    return fs, path


WILDCARDS = "*?["  # what makes a path a glob, for fsspec's glob as for the shell's


def has_wildcard(path: str) -> bool:
    return any(ch in path for ch in WILDCARDS)


def glob_root(pattern: str) -> str:
    """The folder a glob searches under: `scans/19*/a?.tif` -> `scans`. Paths found by the
    glob are named relative to it (ids, Hive partitions)."""
    head = re.split(r"[*?\[]", pattern, maxsplit=1)[0]
    return head.rsplit("/", 1)[0] if "/" in head else head


def is_local(fs) -> bool:
    return "file" in (fs.protocol if isinstance(fs.protocol, (tuple, list)) else (fs.protocol,))


def pa_filesystem(fs):
    """An fsspec filesystem as pyarrow wants it (None: pyarrow's own local one)."""
    from pyarrow.fs import FSSpecHandler, PyFileSystem

    return None if is_local(fs) else PyFileSystem(FSSpecHandler(fs))


def join(base: str, *parts: str) -> str:
    base = str(base).rstrip("/")
    return "/".join([base, *[p.strip("/") for p in parts]])


# botocore's, raised by s3fs as they are (not as OSError) before any request is sent
_NO_CREDENTIALS = ("NoCredentialsError", "PartialCredentialsError", "CredentialRetrievalError")
CREDENTIALS_HINT = (
    "give this machine S3 credentials (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, AWS_PROFILE, or an IAM "
    "role), or --storage-options '{\"anon\": true}' for a public bucket"
)


def no_credentials(e: BaseException) -> bool:
    """An S3 request refused on this side: there are no (or only partial) credentials."""
    return type(e).__name__ in _NO_CREDENTIALS


_TRANSIENT_WORDS = ("connect", "timeout", "throttl", "slowdown", "temporar", "unavailable", "reset", "closed")


def is_transient(e: BaseException) -> bool:
    """Worth another try: OS-level I/O errors other than 'not there' / 'not allowed', and
    the network errors of the S3 client stack (botocore, aiohttp), which are not OSErrors."""
    if isinstance(e, (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)):
        return False
    if isinstance(e, OSError):
        return True
    module = type(e).__module__.split(".")[0]
    name = type(e).__name__.lower()
    return module in ("botocore", "aiobotocore", "aiohttp", "urllib3") and any(
        w in name for w in _TRANSIENT_WORDS
    )


def with_retries(fn, what: str):
    """Run fn(); retry transient errors with exponential backoff, then report them."""
    delay = BACKOFF_S
    for attempt in range(RETRIES + 1):
        try:
            return fn()
        except Exception as e:
            if not is_transient(e):
                raise
            if attempt == RETRIES:
                text = " ".join(str(e).split())
                raise StorageError(f"{what}: {type(e).__name__}: {text} (after {RETRIES} retries)") from None
            time.sleep(delay)
            delay *= 2


def read_bytes(fs, path: str) -> bytes:
    return with_retries(lambda: fs.cat_file(path), f"reading {path}")


def atomic_write_bytes(url_or_path: str, data: bytes, fs=None) -> None:
    if fs is None:
        fs, path = resolve(url_or_path)
    else:
        path = url_or_path
    if is_local(fs):
        _atomic_local(path, data)
    else:
        with_retries(lambda: fs.pipe_file(path, data), f"writing {path}")


def _atomic_local(path: str, data: bytes) -> None:
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=TEMP_PREFIX, dir=d)
    try:
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; outputs should read like any other file
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


# ours alone: the clean-up after a crash deletes these, and never another program's .tmp-*
TEMP_PREFIX = ".tmp-archive-colorize-"


def remove_stale_temps(fs, root: str) -> int:
    """Delete the temporaries a SIGKILL left between mkstemp and the rename, in OUT and its
    sub-folders (images/, the progress log). Only call while holding OUT's lock."""
    if not is_local(fs):
        return 0  # object stores write whole objects: no temporaries there
    n = 0
    for pattern in (f"{TEMP_PREFIX}*", f"*/{TEMP_PREFIX}*"):
        for p in fs.glob(f"{root.rstrip('/')}/{pattern}"):
            try:
                os.unlink(p)
                n += 1
            except FileNotFoundError:
                pass
    return n


def write_json(fs, path: str, obj) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n").encode(), fs=fs)


def open_url(url: str, mode: str = "rb", storage_options: dict | None = None):
    return fsspec.open(url, mode, **(storage_options or {}))


def abs_uri(uri: str, base_dir: str) -> str:
    """A manifest's relative `uri` against its folder; absolute paths and URLs as they are."""
    if "://" in uri or uri.startswith("/"):
        return uri
    return f"{base_dir.rstrip('/')}/{uri}"
