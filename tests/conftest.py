"""Shared fixtures: real scans, seeded random weights, one Ray cluster, a moto S3 server.

Most tests need only what a plain clone has: the real photographs committed in
manifests/sample/ and scans made from them here. Tests about real data (held-out precision
checks, the colour filter on MiniPlaces, the 18 historical scans) are marked `shared`."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("ARCHIVE_COLORIZE_SHARED", ROOT.parent / "shared"))
HISTORICAL = SHARED / "data" / "historical"
MINIPLACES = SHARED / "data" / "miniplaces"
SAMPLE = ROOT / "manifests" / "sample"  # five real grayscale photographs, committed


SHARED_REASON = (
    f"needs the shared test data (public-domain scans, MiniPlaces) at {SHARED}: "
    "clone next to ../shared or set ARCHIVE_COLORIZE_SHARED"
)


def shared_present() -> bool:
    return HISTORICAL.is_dir() and MINIPLACES.is_dir()


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "shared: needs ../shared (skipped with one reason without it; an error under CI=true)"
    )


# What makes a test slow: a Ray cluster, a moto S3 server, or a process of its own. Tests
# that use these fixtures (directly or through another fixture) are marked `slow`, so that
# `pytest -m "not slow"` is the quick loop (CONTRIBUTING.md); the README's command runs all.
SLOW_FIXTURES = {"ray_cluster", "s3", "s3_server", "clean_run", "jobs_head", "cluster"}
SLOW_FILES = {
    "test_jobs.py",
    "test_c2pa.py",
    "test_gpu_benchmark.py",
    "test_default_weights.py",
    "test_fast.py",
    "test_train_device.py",
    "test_manifest_writers.py",
    "test_gpu_node.py",
    "test_gpu_stage.py",  # the GPU training stages' scripts, run as processes on the CPU (48 s)
    "test_lock.py",  # races repeated 30 times, and moto
}


def _mark_slow(items) -> None:
    for item in items:
        path = item.path
        if (
            SLOW_FIXTURES & set(getattr(item, "fixturenames", ()))
            or path.name in SLOW_FILES
            or "reliability" in path.parts
            or item.get_closest_marker("shared")
        ):
            item.add_marker(pytest.mark.slow)


def pytest_collection_modifyitems(config, items):
    """Tests marked `shared` are skipped, for one stated reason, in a plain clone without
    ../shared; in CI (CI=true) a missing ../shared stops the run instead."""
    _mark_slow(items)
    if shared_present():
        return
    marked = [item for item in items if item.get_closest_marker("shared")]
    if not marked:
        return
    if os.environ.get("CI") == "true":
        raise pytest.UsageError(
            f"CI=true, but ../shared is missing: {len(marked)} tests {SHARED_REASON.replace('needs', 'need', 1)}"
        )
    skip = pytest.mark.skip(reason=SHARED_REASON)
    for item in marked:
        item.add_marker(skip)


def need_shared() -> None:
    """In a test or fixture that reads ../shared: skip without it, with the one reason;
    under CI=true, fail instead (CI always has the data)."""
    if shared_present():
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true, but this test {SHARED_REASON}")
    pytest.skip(SHARED_REASON)


def historical(name: str) -> Path:
    need_shared()
    p = HISTORICAL / name
    if not p.exists():
        pytest.fail(f"shared data missing: {p} (set ARCHIVE_COLORIZE_SHARED)")
    return p


def make_random_weights(path: Path, width: float = 0.125, seed: int = 0, global_branch: bool = True) -> Path:
    """A seeded random model whose batch norms hold non-trivial statistics (so folding is
    really exercised) and whose output layer is scaled up so it produces visible colour."""
    from archive_colorize.model.network import ColorizationModel, ModelConfig
    from archive_colorize.model.weights import save_weights

    torch.manual_seed(seed)
    model = ColorizationModel(ModelConfig(num_classes=100, width=width, global_branch=global_branch))
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
            m.momentum = 0.5
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.rand(4, 1, 224, 224))
    model.colorization.output.weight.data *= 8  # saturate a little: random nets are near-grey
    model.eval()
    cats = [f"class_{i}" for i in range(100)]  # generated: a plain clone has no ../shared
    save_weights(model, path, cats, recipe={"note": "seeded random, for tests"}, data={"description": "none"})
    return path


@pytest.fixture(scope="session")
def weights_path(tmp_path_factory) -> Path:
    return make_random_weights(tmp_path_factory.mktemp("weights") / "random.safetensors")


@pytest.fixture(scope="session")
def weights(weights_path):
    from archive_colorize.model.weights import load_weights

    return load_weights(weights_path)


@pytest.fixture(scope="session")
def engine(weights):
    from archive_colorize.model.engine import Engine

    return Engine(weights, device="cpu", working_size=256)


@pytest.fixture(scope="session")
def ray_cluster():
    """One real local Ray cluster for the whole session, sized like the CI machine: 2 CPUs."""
    import ray

    if not ray.is_initialized():
        ray.init(
            # a cluster of its own: without "local", ray.init joins any `ray start` cluster on
            # this machine (another suite's test_jobs head, a developer's own)
            address="local",
            num_cpus=2,
            include_dashboard=False,
            log_to_driver=False,
            logging_level="ERROR",
            runtime_env={"env_vars": {"PYTHONWARNINGS": "ignore"}},
        )
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


def chromium() -> str:
    """Debian's chromium. The tests install nothing: .ci/run installs it (README: "Tests"),
    so CI always has it; elsewhere the test is skipped with this one reason."""
    path = shutil.which("chromium")
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail("CI=true but chromium is missing: .ci/run installs it with apt-get")
        pytest.skip("Debian's chromium is not installed (apt-get install chromium; .ci/run does this)")
    return path


def fetched(name: str, what: str) -> Path:
    """A file .ci/run fetches into .cache/ (never committed: it is another project's), such
    as Mirador's dist from the npm registry; skipped with `what` when it is not there."""
    path = ROOT / ".cache" / name
    if not path.is_file():
        pytest.skip(f"{what} is not in .cache/{name} (.ci/run fetches it)")
    return path


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def s3_server():
    """A moto S3 server on loopback, started by the tests themselves."""
    from moto.server import ThreadedMotoServer

    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    yield {"endpoint_url": endpoint, "key": "testing-key-id", "secret": "testing-secret-value"}
    server.stop()


@pytest.fixture()
def s3(s3_server):
    import s3fs

    fs = s3fs.S3FileSystem(**s3_server)
    fs.invalidate_cache()
    return fs


def sample(name: str) -> Path:
    """A committed real photograph (manifests/sample/): astronaut.jpg 512x512, chelsea.jpg
    451x300, coffee.jpg 600x400, rocket.jpg 640x427 (8-bit gray), coins.png 384x303 (16-bit)."""
    p = SAMPLE / name
    assert p.exists(), f"{p} is part of the repository"
    return p


def sepia_print(path: Path, name: str = "astronaut.jpg") -> Path:
    """A toned print scanned in colour: a real photograph through a sepia ramp, as RGB JPEG."""
    import numpy as np
    from PIL import Image

    g = np.asarray(Image.open(sample(name)).convert("L"), np.float64)[..., None] / 255
    tone = np.array([1.0, 0.82, 0.62])  # warm brown highlights fading to dark umber
    rgb = np.clip(255 * g ** np.array([0.9, 1.0, 1.15]) * tone + 12 * (1 - g), 0, 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgb).save(path, quality=92)
    return path


def large_scan(path: Path, size: tuple[int, int] = (2590, 3367), name: str = "coffee.jpg") -> Path:
    """A print-sized scan (default 2590x3367, 8.7 MP): a real photograph enlarged, with film
    grain so that every pixel's L* is its own."""
    import numpy as np
    from PIL import Image

    im = Image.open(sample(name)).convert("L").resize(size, Image.Resampling.BICUBIC)
    grain = np.random.default_rng(0).normal(0, 4, (size[1], size[0]))
    a = np.clip(np.asarray(im, np.float64) + grain, 0, 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(a).save(path, quality=90)
    return path


def sample_scans(folder: Path) -> list[Path]:
    """Seven real inputs of the kinds an archive holds: the five committed photographs (one
    16-bit PNG), a sepia print scanned in RGB, and a JPEG whose EXIF says to rotate it."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    files = [sample(n) for n in ("astronaut.jpg", "chelsea.jpg", "coffee.jpg", "coins.png", "rocket.jpg")]
    files.append(sepia_print(folder / "sepia_print.jpg"))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 CW on display
    rotated = folder / "rotated_exif.jpg"
    Image.open(sample("chelsea.jpg")).save(rotated, quality=90, exif=exif.tobytes())
    files.append(rotated)
    return files


def write_broken_files(folder: Path) -> dict[str, str]:
    """Three real broken inputs: empty, an HTML error page named .jpg, a truncated JPEG."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "error_page.jpg").write_bytes(
        b"<!DOCTYPE html><html><body>503 Service Unavailable</body></html>"
    )
    good = sample("astronaut.jpg").read_bytes()
    (folder / "truncated.jpg").write_bytes(good[: len(good) // 3])
    return {
        "empty": "empty file (0 bytes)",
        "error_page": "an HTML/XML page, not an image (an error page saved under an image name?)",
        "truncated": "truncated or corrupt JPEG data",
    }


def historical_files() -> list[Path]:
    need_shared()
    files = sorted(p for p in HISTORICAL.iterdir() if p.suffix in (".jpg", ".png"))
    if len(files) != 18:
        pytest.fail("the 18 shared historical scans are not available (set ARCHIVE_COLORIZE_SHARED)")
    return files


def make_places_parquet(
    path: Path, n: int, seed: int = 0, size: int = 64, classes: int = 100, gray_every: int = 8
) -> Path:
    """A small Places-style Parquet shard (`image` JPEG bytes, `label`) of synthetic photos:
    smooth colour fields with a brighter blob, every `gray_every`-th one grayscale (which
    the colour filter must remove). Needs nothing from ../shared."""
    import io

    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq
    from PIL import Image

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    blobs, labels = [], []
    for i in range(n):
        c0 = rng.permutation([220.0, 120.0, 40.0]) + rng.uniform(-15, 15, 3)
        c1 = 255 - c0  # the complementary colour: a clear spread of a*b*, as the filter wants
        t = (xx * rng.uniform(0.2, 1) + yy * rng.uniform(0.2, 1))[..., None] / 2
        img = c0 * (1 - t) + c1 * t
        cy, cx = rng.uniform(0.2, 0.8, 2)
        img += 40 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 0.02)[..., None]
        im = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
        if gray_every and i % gray_every == gray_every - 1:
            im = im.convert("L")
        buf = io.BytesIO()
        im.save(buf, format="JPEG", quality=90)
        blobs.append(buf.getvalue())
        labels.append(int(rng.integers(0, classes)))
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(
        pa.table({"image": pa.array(blobs, pa.binary()), "label": pa.array(labels, pa.int16())}), path
    )
    return path


def make_categories(path: Path, classes: int = 100) -> Path:
    path.write_text("".join(f"/c/class_{i} {i}\n" for i in range(classes)))
    return path
