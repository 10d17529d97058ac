"""Every output says that its colour is AI-made: IPTC Digital Source Type and the AI system
in XMP, read back with exiftool (the tool archives use) and with Pillow, in every format,
with the source's own EXIF and XMP kept."""

import io
import json
import shutil
import subprocess

import numpy as np
import pytest
from PIL import Image

from archive_colorize.imaging.images import decode_image
from archive_colorize.imaging.provenance import DIGITAL_SOURCE_TYPE, Provenance
from archive_colorize.imaging.render import render

from .conftest import sample

SOURCE_XMP = (
    b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
    b'<rdf:Description rdf:about="" xmlns:dc="http://purl.org/dc/elements/1.1/" '
    b'xmlns:Iptc4xmpExt="http://iptc.org/std/Iptc4xmpExt/2008-02-29/">'
    b'<dc:title><rdf:Alt><rdf:li xml:lang="x-default">Migrant Mother</rdf:li></rdf:Alt></dc:title>'
    b'<Iptc4xmpExt:DigitalSourceType>http://cv.iptc.org/newscodes/digitalsourcetype/print</Iptc4xmpExt:DigitalSourceType>'
    b'</rdf:Description></rdf:RDF></x:xmpmeta>'
)
SHA = "ab" * 32


def exiftool(path) -> dict:
    if shutil.which("exiftool") is None:
        import os

        if os.environ.get("CI") == "true":
            pytest.fail("CI=true but exiftool is missing: .ci/run installs libimage-exiftool-perl")
        pytest.skip("exiftool is not installed (apt-get install libimage-exiftool-perl; .ci/run does this)")
    r = subprocess.run(["exiftool", "-j", "-G1", "-u", str(path)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)[0]


@pytest.fixture(scope="module")
def scans(tmp_path_factory):
    """An 8-bit scan that carries its archive's EXIF and XMP, and a 16-bit one that has none."""
    d = tmp_path_factory.mktemp("prov")
    exif = Image.Exif()
    exif[0x013B] = "Dorothea Lange"
    exif[0x8298] = "Public domain"
    src = d / "lange.jpg"
    Image.open(sample("chelsea.jpg")).save(src, quality=92, exif=exif.tobytes(), xmp=SOURCE_XMP)
    return decode_image(src.read_bytes()), decode_image(sample("coins.png").read_bytes())


@pytest.mark.parametrize(
    "fmt,depth", [("jpeg", 8), ("png", 8), ("tiff", 8), ("webp", 8), ("png", 16), ("tiff", 16)]
)
def test_every_format_says_ai_colour_and_keeps_the_source(fmt, depth, scans, engine, tmp_path):
    d = scans[0] if depth == 8 else scans[1]
    assert d.bit_depth == depth
    out = tmp_path / f"out.{fmt}"
    out.write_bytes(render(d, engine.predict(d.lightness).ab, fmt, Provenance(SHA, "int8")))
    tags = exiftool(out)
    assert tags["XMP-iptcExt:DigitalSourceType"] == DIGITAL_SOURCE_TYPE, tags
    assert tags["XMP-iptcExt:AISystemUsed"] == "archive-colorize"
    assert (
        tags["XMP-archivecolorize:WeightsSHA256"] == SHA and tags["XMP-archivecolorize:Precision"] == "int8"
    )
    assert tags[next(k for k in tags if k.endswith(":Software"))].endswith(f"(weights {SHA[:12]}, int8)")
    if depth == 8:  # the source's own metadata is still there
        assert tags["XMP-dc:Title"] == "Migrant Mother"
        assert (
            tags["XMP-archivecolorize:SourceDigitalSourceType"]
            == "http://cv.iptc.org/newscodes/digitalsourcetype/print"
        )
        assert tags[next(k for k in tags if k.endswith(":Artist"))] == "Dorothea Lange"
    # and Pillow sees the same packet
    im = Image.open(io.BytesIO(out.read_bytes()))
    raw = (
        im.info.get("xmp")
        or im.info.get("XML:com.adobe.xmp")
        or (im.tag_v2.get(700) if fmt == "tiff" else None)
    )
    raw = raw.encode() if isinstance(raw, str) else bytes(raw)
    assert DIGITAL_SOURCE_TYPE.encode() in raw and raw.count(b"Iptc4xmpExt:DigitalSourceType=") == 1


def test_xmp_packets():
    p = Provenance(SHA)
    fresh = p.xmp(None)
    assert fresh.startswith(b"<?xpacket") and DIGITAL_SOURCE_TYPE.encode() in fresh
    merged = p.xmp(SOURCE_XMP).decode()
    assert merged.count("DigitalSourceType") == 2  # ours, and the source's kept under our own name
    assert "<Iptc4xmpExt:DigitalSourceType>" not in merged and "Migrant Mother" in merged
    attr = SOURCE_XMP.replace(
        b"<Iptc4xmpExt:DigitalSourceType>http://cv.iptc.org/newscodes/digitalsourcetype/print"
        b"</Iptc4xmpExt:DigitalSourceType>",
        b"",
    ).replace(
        b'rdf:about=""',
        b'rdf:about="" Iptc4xmpExt:DigitalSourceType="http://cv.iptc.org/newscodes/digitalsourcetype/negativeFilm"',
    )
    merged = p.xmp(attr).decode()
    assert (
        'archivecolorize:SourceDigitalSourceType="http://cv.iptc.org/newscodes/digitalsourcetype/negativeFilm"'
        in merged
    )
    assert merged.count(f'Iptc4xmpExt:DigitalSourceType="{DIGITAL_SOURCE_TYPE}"') == 1
    assert p.xmp(b"not xmp at all") == fresh  # an unreadable packet is replaced, not merged into


HOSTILE_XMP = [
    # our label would land inside the comment: an XML parser would find none
    SOURCE_XMP.replace(b"</rdf:RDF>", b"</rdf:RDF><!-- </rdf:RDF> -->"),
    # two Digital Source Types, one as an attribute and one as an element
    SOURCE_XMP.replace(
        b'rdf:about=""',
        b'rdf:about="" Iptc4xmpExt:DigitalSourceType="http://cv.iptc.org/newscodes/digitalsourcetype/digitalCapture"',
    ),
    # an entity that would expand: the packet is refused and replaced, never expanded
    b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e "lol">]>' + SOURCE_XMP.replace(b"Migrant Mother", b"&e;"),
    b"<x:xmpmeta><not xml",
]


@pytest.mark.parametrize("source", HOSTILE_XMP, ids=["comment", "duplicate", "entity", "broken"])
def test_the_source_xmp_cannot_hide_the_ai_label(source, tmp_path):
    from defusedxml.ElementTree import fromstring

    packet = Provenance(SHA).xmp(source)
    text = packet.decode()
    assert "<!--" not in text and "<!DOCTYPE" not in text and "lol" not in text
    root = fromstring(text)
    ns = "{http://iptc.org/std/Iptc4xmpExt/2008-02-29/}DigitalSourceType"
    values = [el.attrib[ns] for el in root.iter() if ns in el.attrib] + [el.text for el in root.iter(ns)]
    assert values == [DIGITAL_SOURCE_TYPE]
    if source is HOSTILE_XMP[0]:
        assert "Migrant Mother" in text  # the source's own description is kept


def test_exiftool_reads_the_label_behind_a_hostile_comment(tmp_path):
    out = tmp_path / "out.jpg"
    Image.open(sample("chelsea.jpg")).convert("RGB").save(out, xmp=Provenance(SHA).xmp(HOSTILE_XMP[0]))
    tags = exiftool(out)
    assert tags["XMP-iptcExt:DigitalSourceType"] == DIGITAL_SOURCE_TYPE
    assert tags["XMP-dc:Title"] == "Migrant Mother"


def test_a_jpeg_from_a_source_with_huge_xmp_and_exif_is_written_with_the_label():
    """`XMP data is too long` once failed the row: a JPEG segment holds 64 KB."""
    from archive_colorize.imaging.render import encode_result

    huge = SOURCE_XMP.replace(b"Migrant Mother", b"x" * 100_000)
    exif = Image.Exif()
    exif[0x010E] = "d" * 70_000  # ImageDescription
    rgb = np.zeros((8, 8, 3), np.uint8)
    blob = encode_result(rgb, "jpeg", Provenance(SHA), exif=exif, xmp=huge)
    im = Image.open(io.BytesIO(blob))
    assert DIGITAL_SOURCE_TYPE.encode() in im.info["xmp"] and b"x" * 1000 not in im.info["xmp"]
    assert im.getexif()[0x0131].startswith("archive-colorize")  # Software


TIFF_XMP = (
    b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
    b'<rdf:Description rdf:about="" xmlns:xmpMM="http://ns.adobe.com/xap/1.0/mm/" '
    b'xmlns:Iptc4xmpExt="http://iptc.org/std/Iptc4xmpExt/2008-02-29/" '
    b'xmpMM:InstanceID="xmp.iid:master-0001" xmpMM:DocumentID="xmp.did:master" '
    b'Iptc4xmpExt:DigitalSourceType="http://cv.iptc.org/newscodes/digitalsourcetype/negativeFilm"/>'
    b"</rdf:RDF></x:xmpmeta>"
)


def _tiff_master(path):
    """An 8-bit TIFF master as digitisation software writes one: descriptive IFD0 tags, an
    Exif sub-IFD (DateTimeOriginal), and its XMP in the IFD (tag 700)."""
    from PIL import TiffImagePlugin

    info = TiffImagePlugin.ImageFileDirectory_v2()
    info[0x010E] = "Migrant Mother, Nipomo, California"
    info[0x013B] = "Dorothea Lange"
    info[0x010F] = "Hasselblad"
    info[0x8769] = {0x9003: "1936:03:01 10:00:00", 0x829A: (1, 60)}
    info[700] = TIFF_XMP
    Image.open(sample("chelsea.jpg")).convert("L").save(path, format="TIFF", tiffinfo=info)
    return path


def _xmp_of(im, fmt):
    raw = (
        im.info.get("xmp")
        or im.info.get("XML:com.adobe.xmp")
        or (im.tag_v2.get(700) if fmt == "tiff" else None)
    )
    return raw.encode() if isinstance(raw, str) else bytes(raw)


def test_a_16_bit_tiff_output_keeps_the_exif_sub_ifd(engine, tmp_path):
    from PIL import TiffImagePlugin

    info = TiffImagePlugin.ImageFileDirectory_v2()
    info[0x013B] = "Dorothea Lange"
    info[0x8769] = {0x9003: "1936:03:01 10:00:00"}
    src = tmp_path / "master16.tif"
    grey = np.asarray(Image.open(sample("chelsea.jpg")).convert("L"), np.uint16) * 257
    Image.fromarray(grey, "I;16").save(src, format="TIFF", tiffinfo=info)
    d = decode_image(src.read_bytes())
    assert d.bit_depth == 16
    out = render(d, engine.predict(d.lightness).ab, "tiff", Provenance(SHA))
    im = Image.open(io.BytesIO(out))
    exif = im.getexif()
    assert exif.get_ifd(0x8769)[0x9003] == "1936:03:01 10:00:00" and exif[0x013B] == "Dorothea Lange"
    import tifffile

    with tifffile.TiffFile(io.BytesIO(out)) as t:  # still a 16-bit RGB TIFF with its pixels
        assert t.pages[0].dtype == np.uint16 and t.pages[0].shape[-1] == 3
        assert t.asarray().shape[:2] == grey.shape


@pytest.mark.parametrize("fmt", ["jpeg", "png", "webp", "tiff"])
def test_from_a_tiff_master_the_output_has_one_label_its_exif_and_a_derivation(fmt, engine, tmp_path):
    from defusedxml.ElementTree import fromstring

    d = decode_image(_tiff_master(tmp_path / "master.tif").read_bytes())
    out = tmp_path / f"out.{fmt}"
    out.write_bytes(render(d, engine.predict(d.lightness).ab, fmt, Provenance(SHA)))
    im = Image.open(io.BytesIO(out.read_bytes()))
    exif = im.getexif()
    # the descriptive tags and the Exif sub-IFD came along; the TIFF's structure and XMP did not
    assert exif[0x013B] == "Dorothea Lange" and exif[0x010F] == "Hasselblad"
    assert exif.get_ifd(0x8769)[0x9003] == "1936:03:01 10:00:00"
    if fmt != "tiff":  # (a TIFF has its own structure tags, of its own pixels)
        assert not {0x0100, 0x0111, 0x02BC} & set(exif), sorted(hex(k) for k in exif)
    else:
        assert im.size == Image.open(tmp_path / "master.tif").size
    packets = [_xmp_of(im, fmt)]
    if 0x02BC in exif and fmt != "tiff":
        packets.append(bytes(exif[0x02BC]))
    rdf = "{http://www.w3.org/1999/02/22-rdf-syntax-ns#}"
    mm = "{http://ns.adobe.com/xap/1.0/mm/}"
    found = []
    for packet in packets:
        root = fromstring(packet.decode())
        found += [v for el in root.iter() for k, v in el.attrib.items() if k.endswith("}DigitalSourceType")]
        found += ["".join(el.itertext()) for el in root.iter() if el.tag.endswith("}DigitalSourceType")]
    assert found == [DIGITAL_SOURCE_TYPE]  # exactly one, ours
    root = fromstring(packets[0].decode())
    iid = [el.text for el in root.iter(f"{mm}InstanceID")]
    assert len(iid) == 1 and iid[0].startswith("xmp.iid:") and iid[0] != "xmp.iid:master-0001"
    ref = next(root.iter(f"{mm}DerivedFrom"))
    assert [el.text for el in ref] == ["xmp.iid:master-0001", "xmp.did:master"]
    assert [el.text for el in root.iter(f"{mm}OriginalDocumentID")] == ["xmp.did:master"]
    events = list(next(root.iter(f"{mm}History")).iter(f"{rdf}li"))
    assert [e[0].text for e in events] == ["derived"] and events[-1][-1].text.startswith("archive-colorize ")
    # the same input and model: the same bytes (the new ids come from the pixels made)
    again = render(d, engine.predict(d.lightness).ab, fmt, Provenance(SHA))
    assert _xmp_of(Image.open(io.BytesIO(again)), fmt) == packets[0]
    if fmt != "tiff":  # (libtiff's deflate leaves one padding byte unset: not byte-stable)
        assert again == out.read_bytes()


def _master(path, kind):
    """A master as digitisation software writes one, in `kind`'s format: descriptive IFD0
    tags, an Exif sub-IFD (DateTimeOriginal) and the master's XMP (its own InstanceID,
    DocumentID and a `negativeFilm` source type)."""
    if kind == "tiff":
        return _tiff_master(path)
    exif = Image.Exif()
    exif[0x010E] = "Migrant Mother, Nipomo, California"
    exif[0x013B] = "Dorothea Lange"
    exif[0x010F] = "Hasselblad"
    exif.get_ifd(0x8769)[0x9003] = "1936:03:01 10:00:00"
    grey = Image.open(sample("chelsea.jpg")).convert("L")
    if kind == "jpeg":
        grey.save(path, format="JPEG", quality=92, exif=exif.tobytes(), xmp=TIFF_XMP)
    else:
        from PIL import PngImagePlugin

        info = PngImagePlugin.PngInfo()
        info.add_itxt("XML:com.adobe.xmp", TIFF_XMP.decode())
        grey.save(path, format="PNG", exif=exif.tobytes(), pnginfo=info)
    return path


@pytest.mark.parametrize("fmt", ["jpeg", "png", "webp", "tiff"])
@pytest.mark.parametrize("source", ["tiff", "png", "jpeg"])
def test_exiftool_reads_one_label_the_masters_exif_and_a_derivation(source, fmt, engine, tmp_path):
    master = _master(tmp_path / f"master.{source}", source)
    assert exiftool(master)["XMP-iptcExt:DigitalSourceType"].endswith("/negativeFilm")
    d = decode_image(master.read_bytes())
    out = tmp_path / f"out.{fmt}"
    out.write_bytes(render(d, engine.predict(d.lightness).ab, fmt, Provenance(SHA)))
    r = subprocess.run(
        ["exiftool", "-j", "-G1", "-a", "-u", str(out)], capture_output=True, text=True, timeout=60
    )
    tags = json.loads(r.stdout)[0]
    # -a lists duplicates under their group: one DigitalSourceType in the whole file, ours
    assert [v for k, v in tags.items() if k.endswith(":DigitalSourceType")] == [DIGITAL_SOURCE_TYPE], tags
    assert tags["XMP-archivecolorize:SourceDigitalSourceType"].endswith("/negativeFilm")
    exif = {k.split(":", 1)[1]: v for k, v in tags.items() if k.split(":", 1)[0] in ("IFD0", "ExifIFD")}
    assert exif["Artist"] == "Dorothea Lange" and exif["Make"] == "Hasselblad"
    assert exif["ImageDescription"] == "Migrant Mother, Nipomo, California"
    assert exif["DateTimeOriginal"] == "1936:03:01 10:00:00"
    assert (
        tags["XMP-xmpMM:InstanceID"].startswith("xmp.iid:")
        and tags["XMP-xmpMM:InstanceID"] != "xmp.iid:master-0001"
    )
    assert tags["XMP-xmpMM:DocumentID"] != "xmp.did:master"
    assert tags["XMP-xmpMM:DerivedFromInstanceID"] == "xmp.iid:master-0001"
    assert tags["XMP-xmpMM:DerivedFromDocumentID"] == "xmp.did:master"
    assert tags["XMP-xmpMM:OriginalDocumentID"] == "xmp.did:master"
    assert tags["XMP-xmpMM:HistoryAction"] == "derived"
    assert tags["XMP-xmpMM:HistorySoftwareAgent"].startswith("archive-colorize ")
    assert not r.stderr.strip() and "Warning" not in json.dumps(tags), (
        r.stderr,
        tags.get("ExifTool:Warning"),
    )
