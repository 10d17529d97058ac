"""Defects a new user hit (issue 18), each with the test that failed before its fix."""

import json
import os
import shlex
import shutil

import fsspec
import pytest
from typer.testing import CliRunner

from archive_colorize.apps.cli import app
from archive_colorize.run.jobs import entrypoint
from archive_colorize.run.pipeline import RunOptions
from archive_colorize.model.weights import file_sha256

from .conftest import ROOT

runner = CliRunner()


@pytest.fixture()
def s3_weights(s3, s3_server, weights_path, monkeypatch):
    """The test weights at s3://wts/w.safetensors, found through the standard AWS environment."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_server["key"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_server["secret"])
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server["endpoint_url"])
    fsspec.config.conf.pop("s3", None)
    if not s3.exists("wts"):
        s3.mkdir("wts")
    s3.put(str(weights_path), "wts/w.safetensors")
    return "s3://wts/w.safetensors"


@pytest.fixture()
def sample(tmp_path):
    shutil.copytree(ROOT / "manifests", tmp_path / "manifests", ignore=shutil.ignore_patterns("*-out"))
    return tmp_path / "manifests" / "sample.parquet"


def test_run_takes_weights_from_a_url(s3_weights, weights_path, sample):
    # before: "weights file not found: s3:/wts/w.safetensors" (a Path collapses the //)
    r = runner.invoke(app, ["run", str(sample), "--weights", s3_weights, "--dry-run"])
    assert r.exit_code == 0, r.output
    assert f"weights sha256 {file_sha256(weights_path)[:12]}" in r.output


def test_colorize_takes_weights_from_a_url(s3_weights, tmp_path):
    src = ROOT / "manifests" / "sample" / "rocket.jpg"
    r = runner.invoke(
        app,
        ["colorize", str(src), "--out", str(tmp_path / "o"), "--weights", s3_weights, "--working-size", "64"],
    )
    assert r.exit_code == 0, r.output
    assert (tmp_path / "o" / "rocket.png").stat().st_size > 1000


def test_submit_passes_url_weights_that_run_accepts(s3_weights, weights_path, sample):
    cmd = entrypoint(RunOptions(manifest=str(sample), weights=s3_weights), str(sample.parent / "sample-out"))
    args = shlex.split(cmd)
    assert args[:2] == ["archive-colorize", "run"] and args[args.index("--weights") + 1] == s3_weights
    r = runner.invoke(app, [*args[1:], "--dry-run"])  # the job's own command line, through the real parser
    assert r.exit_code == 0, r.output
    assert f"weights sha256 {file_sha256(weights_path)[:12]}" in r.output


def test_style_from_a_missing_file_is_one_line(tmp_path):
    r = runner.invoke(
        app,
        [
            "colorize",
            str(ROOT / "manifests" / "sample" / "rocket.jpg"),
            "--out",
            str(tmp_path),
            "--style-from",
            str(tmp_path / "missing.jpg"),
        ],
    )
    assert r.exit_code == 1
    assert r.output == (
        f"Error: --style-from {tmp_path / 'missing.jpg'}: no such file\n"
        "Hint: give a grayscale or colour image whose scene should set the colours\n"
    )


@pytest.mark.parametrize(
    "args,hint",
    [
        (
            ["--precision", "int4"],
            "Hint: fp32 is exact and the default; int8 (CPU), bf16 and fp16 (GPU) trade fidelity for speed",
        ),
        (
            ["--batch-size", "0"],
            "Hint: --batch-size counts images per model call (default 8); "
            "--working-size is the long side in pixels (default 512)",
        ),
    ],
)
def test_option_errors_name_their_own_remedy(sample, args, hint):
    r = runner.invoke(app, ["run", str(sample), *args, "--dry-run"])
    assert r.exit_code == 1
    assert r.output.strip().splitlines()[-1] == hint
    assert "training/README.md" not in r.output


@pytest.mark.parametrize(
    "names", [("a/x.jpg", "b/x.jpg"), ("gray16.png", "gray16.tif"), ("Photo.jpg", "photo.png")]
)
def test_colorize_refuses_two_inputs_for_one_output(tmp_path, names):
    src = (ROOT / "manifests" / "sample" / "rocket.jpg").read_bytes()
    for n in names:
        (tmp_path / "in" / n).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "in" / n).write_bytes(src)  # the suffix is not the format: decoding sniffs the bytes
    r = runner.invoke(
        app, ["colorize", str(tmp_path / "in"), "--out", str(tmp_path / "o"), "--working-size", "64"]
    )
    first, second = (tmp_path / "in" / n for n in names)
    out = tmp_path / "o" / f"{first.stem}.png"
    assert r.exit_code == 1
    assert r.output == (
        f"Error: {first} and {second} would both be written to {out}\n"
        "Hint: colorize them into different --out folders, or rename one\n"
    )
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())  # refused before any work


SHARED = [
    "--weights",
    "--format",
    "--working-size",
    "--precision",
    "--batch-size",
    "--device",
    "--max-pixels",
    "--limit",
    "--retry-failed",
    "--actors",
    "--cpus-per-actor",
    "--gpus-per-actor",
    "--chroma-gain",
]


def _params(name):
    import typer

    cmd = typer.main.get_command(app).commands[name]
    return {p.opts[0]: p for p in cmd.params if p.opts and p.opts[0].startswith("--")}


def test_run_and_submit_offer_the_same_options_as_one_definition():
    run, submit, colorize = _params("run"), _params("submit"), _params("colorize")
    for opt in SHARED:
        assert opt in run and opt in submit, (
            opt
        )  # submit had drifted: no --device, --cpus-per-actor, --limit, --max-pixels
        for other in (submit, colorize):
            if opt in other:
                assert (other[opt].help, other[opt].default) == (run[opt].help, run[opt].default), opt
    assert "TF32 is turned off on GPUs" in run["--precision"].help
    assert "Scans per model call" in run["--batch-size"].help


def test_submit_carries_the_new_options_into_the_jobs_run(sample):
    opts = RunOptions(manifest=str(sample), device="cpu", cpus_per_actor=0.5, limit=2, max_pixels=10_000_000)
    args = shlex.split(entrypoint(opts, str(sample.parent / "sample-out")))
    for flag, value in (
        ("--device", "cpu"),
        ("--cpus-per-actor", "0.5"),
        ("--limit", "2"),
        ("--max-pixels", "10000000"),
    ):
        assert args[args.index(flag) + 1] == value
    r = runner.invoke(app, [*args[1:], "--dry-run"])
    assert r.exit_code == 0, r.output
    assert "a run now would process 2 row(s)" in r.output


def test_device_cuda_without_a_gpu_is_an_error_not_a_cpu_run():
    from archive_colorize.errors import ConfigError
    from archive_colorize.run.options import plan_resources

    with pytest.raises(
        ConfigError, match=r"^--device cuda was asked for, but the Ray cluster has no GPU \(2 CPUs, 0 GPUs\)$"
    ):
        plan_resources({"CPU": 2.0}, RunOptions(manifest="m", device="cuda"))
    assert plan_resources({"CPU": 2.0}, RunOptions(manifest="m", device="auto")).device == "cpu"
    assert plan_resources({"CPU": 16.0, "GPU": 1.0}, RunOptions(manifest="m", device="cuda")).device == "cuda"


def test_run_with_device_cuda_on_a_cpu_cluster_says_so_in_one_line(ray_cluster, weights_path, tmp_path):
    out = tmp_path / "out"
    r = CliRunner().invoke(
        app,
        [
            "run",
            str(ROOT / "manifests" / "sample.parquet"),
            "--out",
            str(out),
            "--weights",
            str(weights_path),
            "--device",
            "cuda",
            "--address",
            ray_cluster,
        ],
    )
    assert r.exit_code == 1
    lines = r.output.strip().splitlines()
    assert (
        lines[0] == "Error: --device cuda was asked for, but the Ray cluster has no GPU (2 CPUs, 0 GPUs)"
    ), lines
    assert lines[1].startswith("Hint: start Ray on a GPU node") and "Traceback" not in r.output
    assert not (out / "images").exists()  # nothing colorized on the CPU instead


def test_an_autoscaling_gpu_pool_is_planned_before_gpus_join():
    """A head with 0 CPUs and no GPU node yet: --device cuda --actors N plans a pool of
    1..N GPU actors for the autoscaler to fill, instead of failing or falling back to CPU."""
    from archive_colorize.run.options import plan_resources

    plan = plan_resources({"CPU": 0.0}, RunOptions(manifest="m", device="cuda", actors=8))
    assert (plan.device, plan.min_actors, plan.actors, plan.num_gpus) == ("cuda", 1, 8, 1.0)
    plan = plan_resources({"CPU": 16.0, "GPU": 2.0}, RunOptions(manifest="m"))
    assert (plan.min_actors, plan.actors) == (1, 2)
    plan = plan_resources({"CPU": 2.0}, RunOptions(manifest="m"))
    assert (plan.device, plan.min_actors, plan.actors) == ("cpu", 1, 1)


def test_submit_offers_every_option_that_run_does():
    """Built from RunOptions, the one definition: every option a run has is a flag of both
    `run` and `submit`, with the field's help and default (a scheduled job once could not
    sign its output, nor set --iiif-base or --progress-every)."""
    from dataclasses import MISSING

    run, submit = _params("run"), _params("submit")
    for f in RunOptions.options("submit"):
        flag = f.metadata["flag"]
        default = f.default_factory() if f.default is MISSING else f.default
        for cmd in (run, submit):
            assert flag in cmd, flag
            assert f.metadata["help"].split()[0] in cmd[flag].help, flag
            # JSON text and repeatable options default to None on the command line
            assert cmd[flag].default == (None if f.name == "storage_options" or default == [] else default), (
                flag
            )
    # run's own: the cluster to join (submit's --address is the Jobs API) and Ray's logs
    assert {f.name for f in RunOptions.options("run")} - {f.name for f in RunOptions.options("submit")} == {
        "address",
        "verbose",
    }


def _unusual(f):
    """A value other than the field's default, of its type."""
    if f.metadata["choices"]:
        return (
            f.metadata["choices"][-1] if f.default != f.metadata["choices"][-1] else f.metadata["choices"][0]
        )
    kind = RunOptions.types()[f.name]
    if kind is bool:
        return True
    if f.name == "storage_options":
        return {"anon": True, "client_kwargs": {"endpoint_url": "http://127.0.0.1:9"}}
    if kind is list:
        return ["http://127.0.0.1:8000/", "https://iiif.internal/"]
    if "float" in str(kind):
        return 0.75
    if "int" in str(kind):
        return 77
    return f"/x/{f.name}"


def test_the_job_entrypoint_asks_run_for_every_option_it_was_given():
    """RunOptions.to_argv, parsed back by the real `run` command, gives the same options."""
    import typer

    opts = RunOptions(
        manifest="m.parquet", out="s3://b/out", **{f.name: _unusual(f) for f in RunOptions.options("submit")}
    )
    argv = shlex.split(entrypoint(opts, "s3://b/out"))
    assert argv[:3] == ["archive-colorize", "run", "m.parquet"]
    cmd = typer.main.get_command(app).commands["run"]
    params = cmd.make_context("run", argv[2:]).params
    for f in RunOptions.options("submit"):
        expected = getattr(opts, f.name)
        got = params[f.name]
        assert (json.loads(got) if f.name == "storage_options" else got) == expected, f.name
    assert (params["manifest"], params["out"]) == ("m.parquet", "s3://b/out")
    # the defaults are left out, except those that pin a job's bytes
    plain = shlex.split(entrypoint(RunOptions(manifest="m.parquet"), "o"))
    assert plain == [
        "archive-colorize",
        "run",
        "m.parquet",
        "--out",
        "o",
        "--format",
        "png",
        "--working-size",
        "512",
        "--batch-size",
        "8",
        "--temporal",
        "shot",
        "--video-format",
        "both",
    ]


def test_submit_carries_signing_publishing_and_progress_options(sample):
    opts = RunOptions(
        manifest=str(sample),
        iiif_base="https://example.org/c",
        c2pa_cert="/etc/c/chain.pem",
        c2pa_key="/etc/c/key.pem",
        progress_every=5.0,
    )
    args = shlex.split(entrypoint(opts, str(sample.parent / "sample-out")))
    for flag, value in (
        ("--iiif-base", "https://example.org/c"),
        ("--c2pa-cert", "/etc/c/chain.pem"),
        ("--c2pa-key", "/etc/c/key.pem"),
        ("--progress-every", "5.0"),
    ):
        assert args[args.index(flag) + 1] == value


def test_a_bad_run_option_hints_at_help_not_at_training_configs():
    r = runner.invoke(
        app, ["run", "manifests/sample.parquet", "--format", "bmp", "--dry-run"], terminal_width=300
    )
    assert r.output.splitlines() == [
        "Error: --format must be one of jpeg, png, tiff, webp, not 'bmp'",
        "Hint: see the command's --help for its options and their defaults",
    ]
    import re

    help_text = re.sub(r"[│\s]+", " ", runner.invoke(app, ["run", "--help"], terminal_width=300).output)
    assert "pip install 'archive-colorize[c2pa]'" in help_text  # Rich markup used to eat [c2pa]


def test_markup_and_control_characters_in_names_are_printed_as_text(tmp_path):
    """`[/]` as a column crashed `manifest check` (Rich MarkupError); `[link=...]` in an id
    became a link; ESC[2J would clear the screen; `colorize` stopped after one odd name."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    m = tmp_path / "m.parquet"
    pq.write_table(
        pa.table({"id": ["[link=http://evil.example]x", "b"], "uri": ["a.jpg", "b.jpg"], "[/]": [1, 2]}), m
    )
    r = runner.invoke(app, ["manifest", "check", str(m)], terminal_width=300)
    assert r.exit_code == 0, r.output
    assert r.output.strip() == f"{m}: 2 rows OK; metadata columns: [/]"
    bad = tmp_path / "bad.parquet"
    pq.write_table(pa.table({"id": ["a", "a"], "uri": ["\x1b[2Jx[/b].jpg", "y.jpg"]}), bad)
    r = runner.invoke(app, ["manifest", "check", str(bad)], terminal_width=300)
    assert r.exit_code == 1 and "\x1b" not in r.output
    src = tmp_path / "in"
    src.mkdir()
    for name in ("a[b]x.png", "[red]c.png", "plain.png"):
        shutil.copy(ROOT / "manifests" / "sample" / "coins.png", src / name)
    r = runner.invoke(app, ["colorize", str(src), "--out", str(tmp_path / "out"), "--working-size", "64"])
    assert r.exit_code == 0, r.output
    assert len(list((tmp_path / "out").iterdir())) == 3
    assert "/[red]c.png -> " in r.output and "/a[b]x.png -> " in r.output  # the names as they are


@pytest.mark.parametrize(
    "argv, first",
    [
        (
            ["run", "--dry-run"],
            "Error: cannot read manifest s3://no-creds/m.parquet: Unable to locate credentials",
        ),
        (["manifest", "check"], "Error: S3 refused: Unable to locate credentials"),
    ],
)
@pytest.mark.slow  # a CLI process each
def test_s3_without_credentials_is_one_line_and_a_hint(tmp_path, argv, first):
    # botocore raises NoCredentialsError (not an OSError) before any request: it was a traceback
    import subprocess
    import sys

    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "PYTHONPATH": str(ROOT)}
    so = '{"endpoint_url": "http://127.0.0.1:9"}'  # nothing listens: no request gets that far
    r = subprocess.run(
        [sys.executable, "-c", "from archive_colorize.apps.cli import run_cli; run_cli()", *argv[:1],
         *argv[1:2], "s3://no-creds/m.parquet", *argv[2:], "--storage-options", so],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120,
    )  # fmt: skip
    assert r.returncode == 1, r.stderr
    assert r.stderr.splitlines() == [
        first,
        "Hint: give this machine S3 credentials (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, AWS_PROFILE, or "
        """an IAM role), or --storage-options '{"anon": true}' for a public bucket""",
    ]


@pytest.mark.slow
def test_run_starts_its_own_ray_despite_a_stale_current_cluster_file(tmp_path, sample):
    """ray.init without an address joins whatever <RAY_TMPDIR>/ray/ray_current_cluster names;
    a cluster that died leaves that file behind, and the README's first command then waited
    for ever on GCS timeouts."""
    import subprocess
    import sys
    import tempfile

    temp = tempfile.mkdtemp(prefix="rs", dir="/tmp")  # short: Ray's socket paths have a length limit
    os.makedirs(f"{temp}/ray")
    with open(f"{temp}/ray/ray_current_cluster", "w") as f:
        f.write("127.0.0.1:9")  # nothing listens there
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update(RAY_TMPDIR=temp, PYTHONPATH=str(ROOT))
    try:
        r = subprocess.run(
            [sys.executable, "-c", "from archive_colorize.apps.cli import run_cli; run_cli()", "run", str(sample),
             "--out", str(tmp_path / "out"), "--working-size", "64", "--limit", "1"],
            capture_output=True, text=True, env=env, timeout=300,
        )  # fmt: skip
    finally:
        shutil.rmtree(temp, ignore_errors=True)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "127.0.0.1:9" not in r.stderr
