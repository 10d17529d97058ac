"""`archive-colorize submit`: run a manifest as a Ray Job on an existing cluster, idempotently.

The submission id is derived from what determines the result: the manifest (URL and
content), the weights, the output location, format and working size. So a nightly
scheduler can submit every manifest it sees, every night:

- a job for that key still running  -> nothing is submitted ("already running")
- its output has nothing pending    -> nothing is submitted ("already finished")
- otherwise                         -> submitted; a resubmission after a failed or stopped
                                       attempt gets the id `<key>-<attempt>` and resumes
                                       from the progress log
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import time
from dataclasses import dataclass, replace

from archive_colorize.errors import ClusterError, ConfigError, StorageError, last_line, one_line
from archive_colorize.sources.manifest import default_out
from archive_colorize.run.options import RunOptions, check, inspect, redact

KEY = "archive_colorize_key"
ACTIVE = ("PENDING", "RUNNING")
AGENT_WAIT_S = 180  # a just-started head on a busy machine can take minutes


@dataclass
class Submission:
    action: str  # "submitted" | "running" | "finished"
    submission_id: str
    message: str
    status: str | None = None


def _status(status) -> str:
    """JobStatus.RUNNING / 'RUNNING' -> 'RUNNING'."""
    return str(status).split(".")[-1]


def job_key(
    manifest_url: str,
    manifest_sha256: str,
    weights_sha256: str,
    out_url: str,
    fmt: str,
    working_size: int,
    precision: str = "fp32",
    chroma_gain: float | None = None,
) -> str:
    # options that change the bytes are part of the identity; ones added later only when
    # set, so the jobs of earlier versions keep their keys
    parts = [manifest_url, manifest_sha256, weights_sha256, out_url, fmt, working_size]
    if precision != "fp32":
        parts.append(precision)
    if chroma_gain is not None:
        parts.append({"chroma_gain": float(chroma_gain)})
    ident = json.dumps(parts)
    return "colorize-" + hashlib.sha256(ident.encode()).hexdigest()[:16]


def entrypoint(opts: RunOptions, out_url: str) -> str:
    """The job's command: `run` with exactly the options `submit` was given (RunOptions.to_argv)."""
    return shlex.join(["archive-colorize", "run", *replace(opts, out=out_url).to_argv()])


API_TIMEOUT_S = 60.0  # each Jobs API call: a head that accepts and never answers must not hang a nightly run
TOKEN_HINT = (
    "the cluster uses Ray's token authentication: set RAY_AUTH_MODE=token and the head's token, in "
    "RAY_AUTH_TOKEN, in a file named by RAY_AUTH_TOKEN_PATH, or in ~/.ray/auth_token "
    "(`ray get-auth-token` on the head prints it)"
)


def _for_every_manifest(e: Exception) -> Exception:
    e.for_every_manifest = True  # submit stops: the next manifest would get the same answer
    return e


def _api_error(address: str, e: BaseException, timeout_s: float) -> ClusterError:
    """One Jobs API failure as one line and the hint for its cause. A ClusterError is
    `for_every_manifest` (no token, no answer: submit stops), except the server's answer
    to this one job."""
    name, text = type(e).__name__, str(e)
    if name == "AuthenticationError" or auth_hint(e):
        if "Authentication failed" in text or "403" in text:
            return ClusterError(
                f"the Ray Jobs API at {address} refused this token (HTTP 403)", hint=TOKEN_HINT
            )
        return ClusterError(f"the Ray Jobs API at {address} wants a token (HTTP 401)", hint=TOKEN_HINT)
    if "Timeout" in name or "timed out" in text.lower():
        return ClusterError(
            f"the Ray Jobs API at {address} did not answer within {timeout_s:g} s",
            hint="check that the head is up and that this is its dashboard address; --api-timeout "
            "gives it longer",
        )
    if "ConnectionError" in name or "connection refused" in text.lower():
        return ClusterError(
            f"cannot reach the Ray Jobs API at {address}: {one_line(e, 300)}",
            hint="give the dashboard address, e.g. http://HEAD:8265 (`ray start --head` prints it), "
            "and check that the head is up",
        )
    answered = ClusterError(f"the Ray Jobs API at {address} answered: {last_line(e, 400)}")
    answered.for_every_manifest = False
    return answered


def _client(address: str, timeout_s: float = API_TIMEOUT_S):
    if not re.match(r"https?://", address):
        # without a scheme Ray's client takes it for a GCS address: a 35 s wait, then C++ warnings
        raise ClusterError(
            f"--address {address}: submit talks to the Ray Jobs API, which is a URL",
            hint="give the dashboard address, e.g. http://HEAD:8265 (`run --address` is the one that "
            "takes the cluster's HOST:6379)",
        )
    from ray.job_submission import JobSubmissionClient

    class Client(JobSubmissionClient):
        # Ray's client sends every request (its constructor's version check too) without a
        # timeout; its _do_request forwards keyword arguments to requests
        def _do_request(self, method, endpoint, **kwargs):
            kwargs.setdefault("timeout", timeout_s)
            return super()._do_request(method, endpoint, **kwargs)

    try:
        return Client(address)
    except Exception as e:
        raise _api_error(address, e, timeout_s) from None


def _call(address: str, timeout_s: float, fn, *args, **kwargs):
    try:
        return fn(*args, **kwargs)
    except Exception as e:
        raise _api_error(address, e, timeout_s) from None


def auth_hint(e: BaseException) -> str | None:
    """The hint for an error that is Ray's token authentication refusing us, else None."""
    text = f"{type(e).__name__} {e}".lower()
    words = ("authentication", "unauthenticated", "auth token", "401", "unauthorized")
    return TOKEN_HINT if any(w in text for w in words) else None


def attempt_number(submission_id: str, key: str) -> int:
    """`key` is attempt 1, `key-N` attempt N; anything else 0."""
    if submission_id == key:
        return 1
    suffix = submission_id[len(key) + 1 :] if submission_id.startswith(key + "-") else ""
    return int(suffix) if suffix.isdigit() else 0


def driver_hint(e: BaseException) -> str | None:
    """The hint for a driver that could not join the cluster. A missing or wrong token looks,
    to `ray.init`, like an unreachable cluster (a plain ConnectionError after ~20 s of retries;
    "Unauthenticated" only reaches the C++ log), so both causes are named."""
    hint = auth_hint(e)
    if hint is not None or not isinstance(e, ConnectionError):
        return hint
    if os.environ.get("RAY_AUTH_MODE", "").lower() != "token":
        return (
            "check that the address is the head's (HOST:6379, as `ray start --head` prints it) and that it "
            "is up; if the cluster uses Ray's token authentication (on by default for `ray start --head` "
            "in Ray 2.60), set RAY_AUTH_MODE=token and the cluster's token, in RAY_AUTH_TOKEN or the file "
            "~/.ray/auth_token (copy it from the head)"
        )
    return (
        "RAY_AUTH_MODE=token is set: the token (RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token) "
        "must be the head's (`ray get-auth-token` on the head prints it); else check the address and that "
        "the cluster is up"
    )


def submit(
    opts: RunOptions, address: str, runtime_env: dict | None = None, timeout_s: float = API_TIMEOUT_S
) -> Submission:
    if redact(opts.storage_options or {}) != (opts.storage_options or {}):
        raise _for_every_manifest(
            ConfigError(
                "--storage-options for submit must not hold credentials: they would be stored in the job's "
                "entrypoint, visible to anyone who can list jobs",
                hint="give the cluster its own credentials (an IAM role, or AWS_* variables on its nodes)",
            )
        )
    checked = check(opts)  # validates manifest, weights and options before anything is submitted
    plan = inspect(opts, checked)
    out_url = (opts.out or default_out(opts.manifest)).rstrip("/")
    try:
        manifest_sha = checked.manifest.fingerprint()  # a file or a whole dataset
    except OSError as e:
        raise StorageError(f"cannot read manifest {opts.manifest}: {e}") from None
    key = job_key(
        opts.manifest,
        manifest_sha,
        plan.weights_sha256,
        out_url,
        opts.fmt,
        opts.working_size,
        opts.precision,
        opts.chroma_gain,
    )
    client = _client(address, timeout_s)
    deadline = time.time() + AGENT_WAIT_S
    while True:
        jobs = _call(address, timeout_s, client.list_jobs)
        attempts = sorted(
            (j for j in jobs if (j.metadata or {}).get(KEY) == key), key=lambda j: j.start_time or 0
        )
        # one job per OUT: a rewritten manifest (a new key) must not start a second writer
        active = [
            j
            for j in jobs
            if _status(j.status) in ACTIVE
            and ((j.metadata or {}).get(KEY) == key or (j.metadata or {}).get("out") == out_url)
        ]
        if active:
            sid = active[-1].submission_id
            other = (active[-1].metadata or {}).get(KEY) != key
            why = f", which writes {out_url} for another manifest or options" if other else ""
            return Submission("running", sid, f"already running as {sid}{why}: nothing submitted", "RUNNING")
        if plan.pending == 0:
            sid = attempts[-1].submission_id if attempts else key
            return Submission(
                "finished",
                sid,
                f"already finished: {plan.done} done, {plan.failed} failed of {plan.total} "
                f"in {plan.out}; nothing submitted"
                + (" (use --retry-failed to retry failures)" if plan.failed else ""),
                "SUCCEEDED",
            )
        # the next attempt after the highest there is: after `ray job delete` of attempt 1,
        # attempt 2 is still there, and counting attempts would name it again
        n = max((attempt_number(j.submission_id, key) for j in attempts), default=0) + 1
        sid = key if n == 1 else f"{key}-{n}"
        try:
            client.submit_job(
                entrypoint=entrypoint(opts, out_url),
                submission_id=sid,
                runtime_env=runtime_env or None,
                metadata={
                    KEY: key,
                    "manifest": opts.manifest,
                    "out": out_url,
                    "weights_sha256": plan.weights_sha256,
                },
            )
            break
        except Exception as e:
            text = str(e)
            # a head that has just started answers 500 until its job agent is up; a racing
            # submitter may have taken this id: both are answered by listing again
            again = "try again later" in text or "already exists" in text
            if not again or time.time() > deadline:
                raise _api_error(address, e, timeout_s) from None
            time.sleep(1.0)
    verb = "resumes" if plan.done or plan.failed else "starts"
    return Submission(
        "submitted",
        sid,
        f"submitted {sid}: {verb} {plan.pending} of {plan.total} rows into {plan.out}",
        "PENDING",
    )


def wait(
    address: str,
    submission_id: str,
    timeout_s: float | None = None,
    on_status=None,
    api_timeout_s: float = API_TIMEOUT_S,
) -> str:
    """Follow a job until it ends; -> its final status."""
    client = _client(address, api_timeout_s)
    last, t0 = None, time.time()
    while True:
        status = _status(_call(address, api_timeout_s, client.get_job_status, submission_id))
        if status != last and on_status:
            on_status(status)
        last = status
        if status in ("SUCCEEDED", "FAILED", "STOPPED"):
            return status
        if timeout_s is not None and time.time() - t0 > timeout_s:
            return status
        time.sleep(1.0)


def logs_tail(address: str, submission_id: str, lines: int = 20, api_timeout_s: float = API_TIMEOUT_S) -> str:
    logs = _call(address, api_timeout_s, _client(address, api_timeout_s).get_job_logs, submission_id)
    return "\n".join(logs.splitlines()[-lines:])


def load_runtime_env(text: str | None) -> dict | None:
    """--runtime-env: inline JSON, or a .json/.yaml file."""
    if not text:
        return None
    from pathlib import Path

    import yaml

    src = Path(text).read_text() if not text.lstrip().startswith("{") and Path(text).exists() else text
    try:
        env = yaml.safe_load(src)
    except yaml.YAMLError as e:
        raise ConfigError(
            f"--runtime-env is neither JSON/YAML nor a readable file: {str(e).splitlines()[0]}"
        ) from None
    if not isinstance(env, dict):
        raise ConfigError(
            f"--runtime-env must be a mapping (e.g. {{\"pip\": [...]}}), not {type(env).__name__}"
        )
    return env
