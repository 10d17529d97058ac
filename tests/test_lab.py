import torch

from archive_colorize.imaging.lab import (
    AB_NORM,
    denormalize_ab,
    gray_to_lightness,
    lab_to_rgb,
    normalize_ab,
    rgb_to_lab,
)


def px(*rgb):
    return torch.tensor(rgb, dtype=torch.float64).view(1, 3, 1, 1)


def test_reference_values():
    # Published sRGB (D65) -> CIELAB values (Lindbloom / colorjs).
    cases = {
        (1, 0, 0): (53.2408, 80.0925, 67.2032),
        (0, 1, 0): (87.7347, -86.1827, 83.1793),
        (0, 0, 1): (32.2970, 79.1875, -107.8602),
        (1, 1, 1): (100.0, 0.0, 0.0),
        (0, 0, 0): (0.0, 0.0, 0.0),
    }
    for rgb, lab in cases.items():
        got = rgb_to_lab(px(*rgb)).flatten().tolist()
        assert all(abs(g - e) < 0.01 for g, e in zip(got, lab)), (rgb, got)


def test_mid_grey_lightness():
    # sRGB 119/255 is the classic "L* = 50" grey (50.0 +- 0.3).
    assert abs(float(gray_to_lightness(torch.tensor(119 / 255))) - 50.0) < 0.3


def test_round_trip_batch_first():
    x = torch.rand(3, 3, 17, 23, dtype=torch.float64)
    lab = rgb_to_lab(x)
    assert lab.shape == x.shape
    assert torch.allclose(lab_to_rgb(lab), x, atol=1e-9)


def test_recombination_pulls_chroma_not_luminance():
    """The path every output takes (render.recombine): a colour far outside sRGB is pulled
    toward grey at the scan's own L*."""
    from archive_colorize.imaging.render import recombine

    ab = torch.tensor([120.0, -110.0]).view(2, 1, 1).expand(2, 2, 2)  # far outside sRGB
    out = recombine(torch.full((4, 4), 40.0), ab, bit_depth=16)
    rgb = torch.from_numpy(out.astype("float64") / 65535).permute(2, 0, 1)[None]
    assert abs(float(rgb_to_lab(rgb)[0, 0].mean()) - 40.0) < 0.05
    lab = torch.tensor([[[[40.0]], [[120.0]], [[-110.0]]]], dtype=torch.float64)
    clipped = lab_to_rgb(lab)
    assert abs(float(rgb_to_lab(clipped)[0, 0]) - 40.0) > 1  # plain clipping would have moved L*


def test_ab_normalisation_is_named_and_invertible():
    assert AB_NORM["name"] == "ab-affine-128"
    ab = torch.tensor([-128.0, 0.0, 127.0])
    assert torch.allclose(normalize_ab(ab), torch.tensor([0.0, 0.5, 255 / 256]))
    assert torch.allclose(denormalize_ab(normalize_ab(ab)), ab)
