import io

import numpy as np
import pytest
import torch
from PIL import Image

from archive_colorize.imaging.provenance import Provenance
from archive_colorize.imaging.render import mean_chroma, recombine, render
from archive_colorize.errors import ImageError
from archive_colorize.imaging.images import decode_image, encode_image, output_bit_depth
from archive_colorize.imaging.lab import gray_to_lightness, rgb_to_lab

from .conftest import large_scan, sample, sepia_print


def to_bytes(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=fmt, **kw)
    return buf.getvalue()


def lightness_of(rgb: np.ndarray) -> torch.Tensor:
    maxval = 65535.0 if rgb.dtype == np.uint16 else 255.0
    t = torch.from_numpy(rgb.astype(np.float64) / maxval).permute(2, 0, 1)[None]
    return rgb_to_lab(t)[0, 0]


def test_grayscale_8bit_lightness_is_exact():
    g = np.array([[0, 119, 255]], np.uint8)
    d = decode_image(to_bytes(Image.fromarray(g, "L"), "PNG"))
    assert d.bit_depth == 8 and (d.width, d.height) == (3, 1)
    assert torch.allclose(
        d.lightness[0], gray_to_lightness(torch.tensor([0, 119, 255]) / 255.0).float(), atol=1e-4
    )


def test_sepia_rgb_uses_luminance(tmp_path):
    path = sepia_print(tmp_path / "sepia.jpg")  # an RGB scan of a toned print
    d = decode_image(path.read_bytes())
    rgb = np.asarray(Image.open(path).convert("RGB"))
    assert torch.allclose(d.lightness, lightness_of(rgb).float(), atol=0.01)


def test_16bit_in_16bit_out(engine):
    ramp = (np.linspace(0, 65535, 64 * 48).reshape(48, 64)).astype(np.uint16)
    d = decode_image(to_bytes(Image.fromarray(ramp), "PNG"))
    assert d.bit_depth == 16
    ab = engine.predict(d.lightness).ab
    for fmt in ("png", "tiff"):
        data = render(d, ab, fmt, Provenance("0" * 64))  # the product's one path to file bytes
        import cv2

        back = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
        assert back.dtype == np.uint16 and back.shape == (48, 64, 3)
        assert len(np.unique(back)) > 256  # really 16 bits of tone, not 8 scaled up
        assert (lightness_of(back[..., ::-1].copy()).float() - d.lightness).abs().max() < 0.05
    assert output_bit_depth(16, "jpeg") == 8


def test_exif_orientation_is_applied():
    src = Image.open(sample("chelsea.jpg"))  # 451x300
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 CW on display
    exif[0x013B] = "Ansel Adams"
    d = decode_image(to_bytes(src, "JPEG", exif=exif.tobytes()))
    assert (d.width, d.height) == (300, 451)
    assert d.exif[0x0112] == 1 and d.exif[0x013B] == "Ansel Adams"


@pytest.mark.parametrize("fmt", ["jpeg", "png", "tiff", "webp"])
def test_archive_metadata_survives_encoding(fmt):
    exif = Image.Exif()
    exif[0x010E] = "Migrant Mother, Nipomo"
    exif[0x013B] = "Dorothea Lange"
    exif[0x8298] = "Public domain"
    exif[0x0132] = "1936:03:01 00:00:00"
    xmp = b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><dc:title>mm</dc:title></x:xmpmeta>'
    rgb = np.full((20, 30, 3), 128, np.uint8)
    back = Image.open(io.BytesIO(encode_image(rgb, fmt, exif=exif, xmp=xmp)))
    got = back.getexif()
    for tag in (0x010E, 0x013B, 0x8298, 0x0132):
        assert got.get(tag) == exif[tag], (fmt, hex(tag))
    assert "archive-colorize" in got.get(0x0131)
    raw = (
        back.tag_v2.get(700) if fmt == "tiff" else back.info.get("xmp") or back.info.get("XML:com.adobe.xmp")
    )
    assert raw and b"dc:title" in (raw if isinstance(raw, bytes) else raw.encode())


@pytest.mark.parametrize("mode", ["P", "RGBA", "LA", "CMYK", "1"])
def test_other_modes_decode(mode, tmp_path):
    base = Image.open(sepia_print(tmp_path / "sepia.jpg")).convert("RGB").resize((40, 30))
    im = base.convert(mode)
    fmt = "JPEG" if mode == "CMYK" else "PNG"
    d = decode_image(to_bytes(im, fmt))
    assert (
        (d.width, d.height) == (40, 30) and 0 <= float(d.lightness.min()) and float(d.lightness.max()) <= 100
    )


def test_multipage_tiff_uses_first_page():
    a = Image.new("L", (10, 10), 20)
    b = Image.new("L", (10, 10), 240)
    buf = io.BytesIO()
    a.save(buf, format="TIFF", save_all=True, append_images=[b])
    d = decode_image(buf.getvalue())
    assert abs(float(d.lightness.mean()) - float(gray_to_lightness(torch.tensor(20 / 255)))) < 1e-3


def test_pixel_limit_is_checked_before_decoding():
    data = to_bytes(Image.new("L", (300, 200)), "PNG")
    with pytest.raises(ImageError, match=r"300x200 = 0.1 Mpx, above the 0 Mpx limit"):
        decode_image(data, max_pixels=50_000)


@pytest.mark.parametrize(
    "data,message",
    [
        (b"", "empty file"),
        (b"%PDF-1.4 ...", "PDF document"),
        (b"<!DOCTYPE html><html>Not found</html>", "HTML"),
        (b"\x00\x01garbage" * 10, "not a recognised image format"),
    ],
)
def test_bad_bytes_give_reasons(data, message):
    with pytest.raises(ImageError, match=message):
        decode_image(data)


def test_truncated_jpeg_is_refused():
    data = sample("chelsea.jpg").read_bytes()
    with pytest.raises(ImageError, match="truncated or corrupt JPEG"):
        decode_image(data[: len(data) // 2])


def test_full_resolution_lightness_is_the_original(engine, tmp_path):
    """A 2590x3367 print-sized scan: output L* equals input L* at every pixel (8-bit quantisation)."""
    path = large_scan(tmp_path / "print.jpg")
    d = decode_image(path.read_bytes())
    assert (d.width, d.height) == (2590, 3367)
    ab = engine.predict(d.lightness).ab
    assert mean_chroma(ab) > 1  # it is coloured, not grey
    rgb = np.asarray(Image.open(io.BytesIO(render(d, ab, "png", Provenance("0" * 64)))))
    assert rgb.shape == (3367, 2590, 3)
    diff = (lightness_of(rgb).float() - d.lightness).abs()
    assert float(diff.max()) < 0.6 and float(diff.mean()) < 0.15


def test_recombine_strips_threads_and_device_give_the_same_bytes():
    L = torch.rand(37, 53) * 100
    ab = torch.randn(2, 10, 14) * 30  # many pixels out of gamut: the late, whole-scan fit is in play
    one = recombine(L, ab, strip_rows=1000, threads=1)
    assert np.array_equal(one, recombine(L, ab, strip_rows=5, threads=2))
    assert np.array_equal(one, recombine(L, ab, strip_rows=3, threads=1, device="cpu"))


@pytest.mark.parametrize("bits", [8, 16])
def test_recombine_is_within_one_code_value_of_a_float64_reference(bits):
    """The select-free float32 colour path against the textbook formulas (torch.where, float64)
    on in-gamut colours, and F.interpolate for the chroma upsampling."""
    import torch.nn.functional as F

    from archive_colorize.imaging.lab import _lab_to_linear, lab_to_rgb

    g = torch.Generator().manual_seed(3)
    L = 3 + torch.rand(61, 83, generator=g, dtype=torch.float64) * 94
    ab = (torch.rand(2, 9, 13, generator=g, dtype=torch.float64) - 0.5) * 16
    up = F.interpolate(ab[None], size=(61, 83), mode="bilinear", align_corners=False)[0]
    ref = lab_to_rgb(torch.cat([L[None], up])[None])[0].permute(1, 2, 0).numpy() * (2**bits - 1)
    got = recombine(L.float(), ab.float(), bits).astype(np.float64)
    lin = _lab_to_linear(torch.cat([L[None], up])[None])[0]
    inside = ((lin >= 0) & (lin <= 1)).all(0).numpy()  # out of gamut, the two differ by design
    assert inside.mean() > 0.9
    assert np.abs(got - ref)[inside].max() <= 1.0


def test_out_of_gamut_chroma_keeps_the_lightness():
    g = torch.Generator().manual_seed(5)
    L = 10 + torch.rand(50, 70, generator=g) * 80
    ab = (torch.rand(2, 5, 7, generator=g) - 0.5) * 250  # most of it far outside sRGB
    rgb = recombine(L, ab, 16)
    back = rgb_to_lab(torch.from_numpy(rgb.astype(np.float64) / 65535).permute(2, 0, 1)[None])[0]
    assert float((back[0] - L.double()).abs().max()) < 0.02
    assert float(back[1:].norm(dim=0).mean()) > 20  # the chroma was pulled in, not thrown away


@pytest.mark.parametrize("fmt", ["png", "tiff"])
def test_archive_metadata_survives_16bit_encoding(fmt):
    exif = Image.Exif()
    exif[0x013B] = "Dorothea Lange"
    exif[0x8298] = "Public domain"
    xmp = b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><dc:title>mm</dc:title></x:xmpmeta>'
    rgb = np.full((20, 30, 3), 30000, np.uint16)
    data = encode_image(rgb, fmt, exif=exif, xmp=xmp)
    if fmt == "png":
        back = Image.open(io.BytesIO(data))
        back.load()
        assert back.getexif().get(0x013B) == "Dorothea Lange"
        assert b"dc:title" in back.info["XML:com.adobe.xmp"].encode()
    else:
        import tifffile

        with tifffile.TiffFile(io.BytesIO(data)) as tif:
            tags = tif.pages[0].tags
            assert tags["Artist"].value == "Dorothea Lange"
            assert tags["Copyright"].value == "Public domain"
            assert b"dc:title" in bytes(tags["XMP"].value)
            assert tif.pages[0].dtype == np.uint16


def test_an_unreadable_file_is_named_by_what_it_looks_like_never_by_its_bytes():
    from archive_colorize.errors import ImageError
    from archive_colorize.imaging.images import decode_image

    cases = {
        b"root:*:20000:0:99999:7:::\ndaemon:*:20000:0:99999:7:::\n": "text, not an image",
        b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n": "a PDF document, not an image",
        b"<!DOCTYPE html><html><body>503</body></html>": (
            "an HTML/XML page, not an image (an error page saved under an image name?)"
        ),
        bytes(range(256)) * 4: "not a recognised image format (1024 bytes of unknown binary data)",
    }
    for data, reason in cases.items():
        with pytest.raises(ImageError) as e:
            decode_image(data)
        assert str(e.value) == reason
        assert "726f6f74" not in str(e.value) and "root" not in str(e.value)
