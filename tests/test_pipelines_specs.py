"""The specs in pipelines/ parse, and every command in them is one the CLI accepts."""

import py_compile
import re
import shlex

import typer
import yaml

from archive_colorize.apps.cli import app

from .conftest import ROOT

P = ROOT / "pipelines"


def accepts(argv: list[str]) -> None:
    """Parse (not run) a command line with the real CLI: unknown options fail here."""
    assert argv[0] == "archive-colorize", argv
    group = typer.main.get_command(app)
    args = argv[1:]
    cmd = group
    while hasattr(cmd, "commands"):
        name, args = args[0], args[1:]
        cmd = cmd.commands[name]
    cmd.make_context(name, list(args))


def test_rayjob():
    spec = yaml.safe_load((P / "rayjob.yaml").read_text())
    assert spec["apiVersion"] == "ray.io/v1" and spec["kind"] == "RayJob"
    accepts(shlex.split(spec["spec"]["entrypoint"]))
    ray_version = spec["spec"]["rayClusterSpec"]["rayVersion"]
    assert f"rayproject/ray:{ray_version}-" in (P / "Dockerfile").read_text()
    assert yaml.safe_load(spec["spec"]["runtimeEnvYAML"])["env_vars"]


def test_cronjob():
    spec = yaml.safe_load((P / "cronjob.yaml").read_text())
    assert spec["kind"] == "CronJob" and spec["spec"]["concurrencyPolicy"] == "Forbid"
    container = spec["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
    assert container["command"][:2] == ["archive-colorize", "submit"]
    accepts(container["command"])
    assert re.fullmatch(r"[\d*/,-]+( [\d*/,-]+){4}", spec["spec"]["schedule"])


def test_runtime_env_and_python_example():
    from archive_colorize.run.jobs import load_runtime_env

    env = load_runtime_env(str(P / "runtime_env.yaml"))
    assert env["pip"]["packages"] and env["env_vars"]["PYTHONUNBUFFERED"] == "1"
    py_compile.compile(str(P / "submit_job.py"), doraise=True)


def test_readme_commands_parse():
    text = (P / "README.md").read_text() + (ROOT / "README.md").read_text()
    lines = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        joined = block.replace("\\\n", " ")
        lines += [line.split("#")[0].strip() for line in joined.splitlines()]
    cmds = [
        shlex.split(line[line.index("archive-colorize") :].split("&&")[0])
        for line in lines
        if "archive-colorize " in line and not line.startswith(("ray ", "python", "kubectl", "docker"))
    ]
    assert len(cmds) >= 10
    for argv in cmds:
        accepts(argv)


def _gpu_groups(spec: dict) -> list[dict]:
    groups = spec["spec"]["rayClusterSpec"].get("workerGroupSpecs", [])
    return [
        g
        for g in groups
        if any(
            "nvidia.com/gpu" in (c.get("resources", {}).get("limits") or {})
            for c in g["template"]["spec"]["containers"]
        )
    ]


def test_gpu_workers_run_the_gpu_image():
    """A GPU worker group must run the image built with CUDA torch: the CPU image would
    leave its GPU idle. The Dockerfile must build that variant with a CUDA wheel."""
    spec = yaml.safe_load((P / "rayjob.yaml").read_text())
    groups = _gpu_groups(spec)
    assert groups, "rayjob.yaml has no GPU worker group"
    for g in groups:
        for c in g["template"]["spec"]["containers"]:
            assert c["image"].endswith("-gpu"), (g["groupName"], c["image"])
    head = spec["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["image"]
    assert not head.endswith("-gpu")
    docker = (P / "Dockerfile").read_text()
    assert re.search(r"^FROM rayproject/ray:[\d.]+-py311-\$\{VARIANT\}$", docker, re.M)
    assert "--build-arg VARIANT=gpu -t ghcr.io/example-archive/archive-colorize:0.1.0-gpu" in docker
    assert re.search(
        r'"\$VARIANT" = gpu \]; then index=https://download.pytorch.org/whl/\$\{TORCH_CUDA\}', docker
    )
