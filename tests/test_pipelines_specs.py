"""The specs in pipelines/ parse, and every command in them is one the CLI accepts."""

import py_compile
import re
import shlex

import pytest

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


KUBERNETES = "1.33"  # the oldest Kubernetes the specs are meant for (CronJob timeZone is GA from 1.27)
RAY_SPECS = ["rayjob.yaml", "raycluster.yaml", "raycronjob.yaml"]


def _load(name: str) -> dict:
    return yaml.safe_load((P / name).read_text())


def _kuberay_errors(doc: dict) -> list[str]:
    import json

    import jsonschema

    schema = json.loads((P / "schemas" / "kuberay-ray.io-v1.json").read_text())
    validator = jsonschema.Draft202012Validator({**schema, "$ref": f"#/$defs/{doc.get('kind')}"})
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(doc)]


def _ray_cluster(doc: dict) -> dict:
    spec = doc["spec"]
    return (
        spec
        if doc["kind"] == "RayCluster"
        else spec.get("rayClusterSpec") or spec["jobTemplate"]["rayClusterSpec"]
    )


def _job_spec(doc: dict) -> dict:
    return doc["spec"] if doc["kind"] == "RayJob" else doc["spec"]["jobTemplate"]


def _pod_templates(doc: dict) -> dict[str, dict]:
    cluster = _ray_cluster(doc)
    pods = {"head": cluster["headGroupSpec"]["template"]}
    pods |= {f"worker {g['groupName']}": g["template"] for g in cluster.get("workerGroupSpecs", [])}
    if doc["kind"] != "RayCluster":
        pods["submitter"] = _job_spec(doc)["submitterPodTemplate"]
    return pods


def _strict_pod_errors(template: dict) -> list[str]:
    import kubernetes_validate

    doc = {"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": "t"}, "template": template}
    try:
        kubernetes_validate.validate(doc, KUBERNETES, strict=True)
    except kubernetes_validate.ValidationError as e:
        return [str(e)]
    return []


def test_the_kuberay_specs_pass_strict_validation():
    for name in RAY_SPECS:
        doc = _load(name)
        assert _kuberay_errors(doc) == [], name
        for pod, template in _pod_templates(doc).items():
            assert _strict_pod_errors(template) == [], (name, pod)


def test_strict_validation_finds_what_it_should():
    # the validators are not a formality: an unknown key and a misspelt pod field are errors
    doc = _load("rayjob.yaml")
    doc["spec"]["schedule"] = "0 1 * * *"  # the RayJob field that was added and reverted
    assert _kuberay_errors(doc) == ["spec: Additional properties are not allowed ('schedule' was unexpected)"]
    template = _pod_templates(_load("rayjob.yaml"))["head"]
    template["spec"]["serviceAcountName"] = "x"
    assert _strict_pod_errors(template) and "serviceAcountName" in _strict_pod_errors(template)[0]
    cron = _load("cronjob.yaml")
    cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["resource"] = {}
    import kubernetes_validate

    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(cron, KUBERNETES, strict=True)


def test_the_cronjob_passes_strict_validation_and_bounds_every_night():
    import kubernetes_validate

    spec = _load("cronjob.yaml")
    kubernetes_validate.validate(spec, KUBERNETES, strict=True)
    s = spec["spec"]
    assert s["concurrencyPolicy"] == "Forbid" and s["startingDeadlineSeconds"] > 0
    job = s["jobTemplate"]["spec"]
    assert job["activeDeadlineSeconds"] > 0 and job["ttlSecondsAfterFinished"] > 0  # a hung pod ends
    pod = job["template"]["spec"]
    assert pod["serviceAccountName"] and pod["restartPolicy"] == "Never"
    container = pod["containers"][0]
    assert container["command"][:2] == ["archive-colorize", "submit"]
    accepts(container["command"])
    env = {e["name"]: e for e in container["env"]}
    assert env["RAY_AUTH_MODE"]["value"] == "token"
    token = env["RAY_AUTH_TOKEN"]["valueFrom"]["secretKeyRef"]
    cluster = _load("raycluster.yaml")["spec"]["authOptions"]
    assert cluster == {"mode": "token", "secretName": token["name"]} and token["key"] == "auth_token"
    assert container["resources"]["requests"] == container["resources"]["limits"]
    assert re.fullmatch(r"[\d*/,-]+( [\d*/,-]+){4}", s["schedule"])
    assert "cluster time zone" not in (P / "cronjob.yaml").read_text()  # it has its own timeZone


def test_the_ray_specs_have_deadlines_deletion_rules_token_auth_and_an_identity():
    for name in RAY_SPECS:
        doc = _load(name)
        cluster = _ray_cluster(doc)
        assert cluster["authOptions"]["mode"] == "token", name
        assert cluster["rayVersion"] in (P / "Dockerfile").read_text(), name
        for pod, template in _pod_templates(doc).items():
            spec = template["spec"]
            assert spec.get("serviceAccountName") == "archive-colorize", (name, pod)
            for c in spec["containers"]:
                assert c["resources"]["requests"] == c["resources"]["limits"], (name, pod)
                if "nvidia.com/gpu" in c["resources"]["limits"]:
                    assert spec["nodeSelector"] and spec["tolerations"], (name, pod)
                    assert c["image"].endswith("-gpu"), (name, pod)
                else:
                    assert not c["image"].endswith("-gpu"), (name, pod)
        for g in cluster.get("workerGroupSpecs", []):
            if not cluster.get("enableInTreeAutoscaling"):  # replicas are what you get
                assert g["minReplicas"] == g["replicas"] == g["maxReplicas"], (name, g["groupName"])
            else:
                assert g["minReplicas"] <= g["replicas"] <= g["maxReplicas"] and g["maxReplicas"] > 0
        if doc["kind"] == "RayCluster":
            continue
        job = _job_spec(doc)
        accepts(shlex.split(job["entrypoint"]))
        assert job["preRunningDeadlineSeconds"] > 0 and job["activeDeadlineSeconds"] > 0, name
        assert "ttlSecondsAfterFinished" not in job and "shutdownAfterJobFinishes" not in job, name
        rules = {(r["policy"], r["condition"].get("jobStatus")): r["condition"]["ttlSeconds"]
                 for r in job["deletionStrategy"]["deletionRules"]}  # fmt: skip
        # the GPUs go at once, the head later (its logs), whatever the outcome
        for status in ("SUCCEEDED", "FAILED"):
            assert rules[("DeleteWorkers", status)] == 0 < rules[("DeleteCluster", status)], (name, status)
        assert yaml.safe_load(job.get("runtimeEnvYAML") or "{}") is not None


def test_the_image_pins_a_torch_and_index_that_exist():
    """The (torch, wheel index) pair of the Dockerfile is one listed as published, and the
    Ray base image is the matching one (PyTorch 2.12+ has no cu128 wheels)."""
    docker = (P / "Dockerfile").read_text()
    pairs = {}
    for line in (P / "torch-wheels.tsv").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            torch, index, base = line.split("\t")
            pairs[(torch, index)] = base
    torch = re.search(r"torch==([\d.]+)", docker).group(1)
    assert torch == "2.13.0"  # the version pyproject and the README install
    assert re.search(r"^FROM rayproject/ray:[\d.]+-py311-\$\{VARIANT\}$", docker, re.M)
    assert 'https://download.pytorch.org/whl/${VARIANT}"' in docker  # one variant names both
    variants = set(re.findall(r"VARIANT=(\w+)", docker)) | {"cpu"}
    assert variants >= {"cpu", "cu126"}, variants
    for v in variants:
        assert pairs.get((torch, v)) == v, f"torch {torch} from the {v} index with rayproject/ray:…-py311-{v}"
    assert ("2.13.0", "cu128") not in pairs
    # layer order: torch is installed before the code is copied in
    assert docker.index("pip install --no-cache-dir torch") < docker.index("COPY")
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert ".git" in ignored and "tests" in ignored


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
