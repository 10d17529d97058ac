"""Submit one colorization run through Ray's Python JobSubmissionClient, the way a
scheduler (Airflow, Dagster, a cron script) would. `archive-colorize submit` does the same
and adds the idempotence checks; this file shows the raw API.

    python pipelines/submit_job.py http://ray-head:8265 s3://archive/manifests/nara.parquet s3://archive/colorized/nara
"""

import sys
import time

from ray.job_submission import JobStatus, JobSubmissionClient


def main(address: str, manifest: str, out: str) -> int:
    client = JobSubmissionClient(address)
    job_id = client.submit_job(
        entrypoint=f"archive-colorize run {manifest} --out {out}",
        # The cluster's image already has archive-colorize; a runtime_env can add to it.
        runtime_env={"env_vars": {"PYTHONUNBUFFERED": "1"}},
        metadata={"manifest": manifest, "out": out},
    )
    print(f"submitted {job_id}")
    while (status := client.get_job_status(job_id)) not in (
        JobStatus.SUCCEEDED,
        JobStatus.FAILED,
        JobStatus.STOPPED,
    ):
        time.sleep(5)
    print(f"{job_id}: {status}")
    print(client.get_job_logs(job_id)[-2000:])
    return 0 if status == JobStatus.SUCCEEDED else 1


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:4]))
