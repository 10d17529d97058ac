"""Device-resident training data: the batched augmentation against the streaming path,
the colour filter, parts that join between epochs."""

import io

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from archive_colorize.train.config import load_config
from archive_colorize.train.data import prepare_batch
from archive_colorize.train.device_data import DeviceDataset, augment, fits, to_lab
from archive_colorize.errors import ConfigError
from archive_colorize.imaging.lab import normalize_ab, rgb_to_lab

from .conftest import ROOT, make_places_parquet

CPU = torch.device("cpu")


def calibration_photos(side=128) -> torch.Tensor:
    """The bundled photographs (astronaut, cat, coffee, coins, rocket) at side x side."""
    files = sorted((ROOT / "archive_colorize" / "calibration").glob("*.jpg"))
    return torch.from_numpy(
        np.stack(
            [np.asarray(Image.open(f).convert("RGB").resize((side, side), Image.BILINEAR)) for f in files]
        )
    )


def streaming_reference(u8: torch.Tensor, offsets, flips, scale=256, crop=224):
    """What data.prepare_batch computes for one draw: resize in sRGB, crop, flip, then L*a*b*."""
    L, ab = [], []
    for img, (y, x), flip in zip(u8, offsets.tolist(), flips.tolist()):
        t = img.permute(2, 0, 1)[None].float() / 255
        t = F.interpolate(t, size=(scale, scale), mode="bilinear", align_corners=False, antialias=True)
        t = t[:, :, y : y + crop, x : x + crop]
        if flip:
            t = t.flip(-1)
        lab = rgb_to_lab(t.clamp(0, 1))
        L.append(lab[:, :1] / 100)
        ab.append(normalize_ab(F.interpolate(lab[:, 1:], scale_factor=0.5, mode="area")))
    return torch.cat(L), torch.cat(ab)


def test_batched_augmentation_matches_the_streaming_path_on_photographs():
    u8 = calibration_photos()
    g = torch.Generator().manual_seed(3)
    offsets = torch.randint(0, 33, (len(u8), 2), generator=g)
    offsets[0] = torch.tensor([0, 32])  # both extremes of the crop range
    flips = torch.tensor([False, True, False, True, True])
    L, ab = augment(to_lab(u8, CPU)[0], offsets=offsets, flips=flips)
    L_ref, ab_ref = streaming_reference(u8, offsets, flips)
    assert L.shape == (5, 1, 224, 224) and ab.shape == (5, 2, 112, 112)
    dL = (L - L_ref).abs().flatten(1).mean(1) * 100  # in L* units
    dab = (ab - ab_ref).abs().flatten(1).mean(1) * 256  # in CIE a*b* units
    # Interpolating L*a*b* instead of sRGB differs only at sharp edges: a fraction of a unit
    assert dL.max() < 0.25 and dab.max() < 0.25, (dL, dab)
    # and a wrong flip or offset would be far off
    L_noflip, _ = augment(to_lab(u8, CPU)[0], offsets=offsets, flips=torch.zeros(5, dtype=torch.bool))
    assert ((L_noflip[1] - L_ref[1]).abs().mean() * 100) > 2


def test_flip_mirrors_exactly():
    lab16 = to_lab(calibration_photos(), CPU)[0]
    offs = torch.tensor([[16, 16]] * 5)
    a, _ = augment(lab16, offsets=offs, flips=torch.zeros(5, dtype=torch.bool))
    b, _ = augment(lab16, offsets=offs, flips=torch.ones(5, dtype=torch.bool))
    torch.testing.assert_close(a.flip(-1), b, atol=2e-6, rtol=0)


def test_filter_counts_and_labels(tmp_path):
    path = make_places_parquet(tmp_path / "train-00.parquet", 64, gray_every=8)
    ds = DeviceDataset(str(path), None, CPU)
    assert (len(ds), ds.filtered, ds.seen, ds.side) == (56, 8, 64, 64)
    import pyarrow.parquet as pq

    labels = pq.read_table(path).column("label").to_pylist()
    kept = [lab for i, lab in enumerate(labels) if i % 8 != 7]
    assert ds.labels.tolist() == kept
    b = ds.batch(torch.arange(8), torch.Generator().manual_seed(0))
    assert b["L"].shape == (8, 1, 224, 224) and b["ab"].shape == (8, 2, 112, 112)
    assert 0 <= float(b["L"].min()) and float(b["L"].max()) <= 1.0001
    assert 0 < float(b["ab"].min()) and float(b["ab"].max()) < 1
    assert float(b["ab"].std()) > 0.01  # the synthetic photos are coloured: targets are not grey


def test_new_parts_join_at_refresh_and_limit_holds(tmp_path):
    make_places_parquet(tmp_path / "d" / "train-00.parquet", 24, seed=1, gray_every=0)
    ds = DeviceDataset(str(tmp_path / "d" / "train-*.parquet"), None, CPU)
    assert len(ds) == 24 and ds.refresh() == 0
    make_places_parquet(tmp_path / "d" / "train-01.parquet", 16, seed=2, gray_every=0)
    assert ds.refresh() == 16 and len(ds) == 40 and len(ds.loaded) == 2
    limited = DeviceDataset(str(tmp_path / "d" / "train-*.parquet"), None, CPU, limit=30)
    assert len(limited) == 30


def test_epochs_split_disjointly_across_ranks(tmp_path):
    ds = DeviceDataset(str(make_places_parquet(tmp_path / "t.parquet", 40, gray_every=0)), None, CPU)
    parts = [torch.cat(list(ds.epoch(4, torch.Generator().manual_seed(7), rank, 2))) for rank in (0, 1)]
    assert len(parts[0]) == len(parts[1]) == 20 and not set(parts[0].tolist()) & set(parts[1].tolist())


def test_other_sizes_are_resized_to_the_resident_side(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    blobs = []
    for size in ((64, 64), (100, 60), (300, 300)):
        buf = io.BytesIO()
        Image.new("RGB", size, (200, 40, 40)).save(buf, format="PNG")
        blobs.append(buf.getvalue())
    pq.write_table(pa.table({"image": blobs, "label": [1, 2, 3]}), tmp_path / "m.parquet")
    ds = DeviceDataset(str(tmp_path / "m.parquet"), None, CPU)
    # flat red fields have no colour *variance*: the filter drops them all, after decoding fine
    assert ds.side == 64 and ds.seen == 3 and ds.filtered == 3


def test_fits_compares_the_resident_size_with_free_memory(tmp_path):
    from archive_colorize.train.data import resolve_source

    src = resolve_source(str(make_places_parquet(tmp_path / "t.parquet", 10)))
    assert fits(src, 256, CPU)
    assert not fits(src, 256, CPU, share=1e-12)


@pytest.mark.parametrize(
    "value,expect", [("true", "true"), ("auto", "auto"), ("false", "false"), ("TRUE", "true")]
)
def test_on_device_config_values(value, expect):
    assert load_config(None, [f"data.on_device={value}"]).data.on_device == expect


def test_on_device_bad_value_names_the_key():
    with pytest.raises(ConfigError) as e:
        load_config(None, ["data.on_device=maybe"])
    assert str(e.value) == "config key data.on_device must be auto, true or false, got 'maybe'"


def test_streaming_and_resident_filters_agree(tmp_path):
    path = make_places_parquet(tmp_path / "t.parquet", 32, gray_every=4)
    import pyarrow.parquet as pq

    t = pq.read_table(path)
    streamed = prepare_batch(
        {
            "image": np.array(t.column("image").to_pylist(), dtype=object),
            "label": np.array(t.column("label").to_pylist()),
        },
        train=False,
        size=64,
    )
    ds = DeviceDataset(str(path), None, CPU)
    assert len(ds) == int(streamed["keep"].sum()) and ds.filtered == int((~streamed["keep"]).sum()) == 8
