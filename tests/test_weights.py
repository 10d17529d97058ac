import pickle
import shutil

import pytest
import torch

from archive_colorize.errors import WeightsError
from archive_colorize.model.network import ColorizationModel, ModelConfig
from archive_colorize.model.weights import FORMAT_VERSION, load_weights, read_metadata, save_weights


def test_header_describes_the_weights(weights_path):
    meta = read_metadata(weights_path)
    assert meta["format"] == "archive-colorize-weights" and meta["format_version"] == FORMAT_VERSION
    assert meta["config"] == {"num_classes": 100, "width": 0.125, "global_branch": True, "global_size": 224}
    assert len(meta["categories"]) == 100 and meta["categories"][0] == "class_0"
    assert meta["lab"]["ab_norm"] == {"name": "ab-affine-128", "offset": 128.0, "scale": 256.0}
    for key in ("recipe", "data", "metrics", "training", "storage", "content_sha256"):
        assert key in meta


def test_load_round_trip_equals_saved_model(tmp_path):
    torch.manual_seed(3)
    model = ColorizationModel(ModelConfig(num_classes=7, width=0.125)).eval()
    for m in model.modules():  # non-trivial batch-norm statistics, so they are checked too
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
    cats = [f"c{i}" for i in range(7)]
    save_weights(model, tmp_path / "w.safetensors", cats)
    w = load_weights(tmp_path / "w.safetensors")
    assert w.categories == cats and w.config == model.config and len(w.file_sha256) == 64
    saved, loaded = model.state_dict(), w.model.state_dict()
    assert saved.keys() == loaded.keys()
    for k in saved:
        assert torch.equal(saved[k], loaded[k]), k
    x = torch.rand(1, 1, 64, 48)
    with torch.inference_mode():
        assert torch.equal(model(x)[0], w.model(x)[0])


def _tamper(src, dst, offset_from_end=100):
    shutil.copy(src, dst)
    data = bytearray(dst.read_bytes())
    data[-offset_from_end] ^= 0xFF
    dst.write_bytes(bytes(data))


def test_tampered_tensor_is_refused(weights_path, tmp_path):
    bad = tmp_path / "tampered.safetensors"
    _tamper(weights_path, bad)
    with pytest.raises(WeightsError, match="failed its sha256 check"):
        load_weights(bad)


def test_tampered_header_is_refused(weights_path, tmp_path):
    data = weights_path.read_bytes()
    bad = tmp_path / "header.safetensors"
    bad.write_bytes(data.replace(b"class_0", b"clasz_0", 1))
    with pytest.raises(WeightsError, match="failed its sha256 check"):
        load_weights(bad)


def test_truncated_file_is_refused(weights_path, tmp_path):
    bad = tmp_path / "truncated.safetensors"
    bad.write_bytes(weights_path.read_bytes()[:5000])
    with pytest.raises(WeightsError, match="not a readable safetensors weights file"):
        load_weights(bad)


def test_pickle_is_never_loaded(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    bad = tmp_path / "model.pt"
    bad.write_bytes(pickle.dumps(Evil()))
    with pytest.raises(WeightsError, match="not a readable safetensors weights file"):
        load_weights(bad)
    assert not marker.exists()


def test_missing_file(tmp_path):
    with pytest.raises(WeightsError, match="weights file not found"):
        load_weights(tmp_path / "nope.safetensors")


def test_plain_safetensors_without_our_header(tmp_path):
    from safetensors.torch import save_file

    p = tmp_path / "other.safetensors"
    save_file({"x": torch.zeros(2)}, p)
    with pytest.raises(WeightsError, match="not an archive-colorize weights file"):
        load_weights(p)


@pytest.mark.parametrize("storage,tol", [("fp16", 1e-2), ("int8", 5e-2)])
def test_compact_storage_dequantizes(weights, tmp_path, storage, tol):
    p = tmp_path / f"{storage}.safetensors"
    save_weights(weights.model, p, weights.categories, storage=storage)
    w = load_weights(p)
    assert w.metadata["storage"] == storage
    L = torch.rand(1, 1, 64, 64)
    with torch.no_grad():
        a, _ = weights.model(L)
        b, _ = w.model(L)
    assert (a - b).abs().max() < tol
    assert p.stat().st_size < (0.6 if storage == "fp16" else 0.35) * 4 * sum(
        t.numel() for t in weights.model.state_dict().values()
    )


def test_wrong_category_count_is_refused(tmp_path):
    m = ColorizationModel(ModelConfig(num_classes=3, width=0.125))
    with pytest.raises(WeightsError, match="2 category names for a model with 3 classes"):
        save_weights(m, tmp_path / "w.safetensors", ["a", "b"])


def test_a_header_that_asks_for_a_huge_network_is_refused_before_it_is_built(weights_path, tmp_path):
    """width 3.0 once allocated 1.8 GB before the tensors were compared with it."""
    import resource

    from archive_colorize.model import weights as W

    meta, tensors = W._read(weights_path, tensors=True)
    for key, value, message in (
        ("width", 3.0, r"config width 3\.0 is outside \(0, 1\]$"),
        ("num_classes", 20_000, r"config num_classes 20000 is outside 1\.\.10000$"),
        ("width", 0.25, r"tensor \S+ is \(\d+(, \d+)*\), but the architecture in its header needs \("),
    ):
        bad = {**meta, "config": {**meta["config"], key: value}}
        if key == "num_classes":
            bad["categories"] = [f"c{i}" for i in range(value)]
        W._write(bad, tensors, tmp_path / "bad.safetensors")
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        with pytest.raises(WeightsError, match=message):
            W.load_weights(tmp_path / "bad.safetensors")
        grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
        assert grown_mb < 300, (key, grown_mb)
