"""Optional C2PA content credentials: each output signed with the archive's chain and key,
its manifest recording the source scan and the AI edit; verified with c2pa's own Reader.
The certificate chain is a throw-away one made here."""

import datetime
import io
import re
import json
import sys

import pytest
from typer.testing import CliRunner

from archive_colorize.apps.cli import app
from archive_colorize.errors import ConfigError
from archive_colorize.run.options import c2pa_credentials
from archive_colorize.imaging.provenance import DIGITAL_SOURCE_TYPE

from .conftest import ROOT, sample

c2pa = pytest.importorskip(
    "c2pa", reason="the optional C2PA extra is not installed (pip install 'archive-colorize[c2pa]')"
)


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    """A test root CA and a signing certificate it issued (not a CA, digitalSignature,
    emailProtection), as C2PA wants; PEM files."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    def name(cn):
        return x509.Name(
            [
                x509.NameAttribute(NameOID.COMMON_NAME, cn),
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "archive-colorize tests"),
            ]
        )

    now = datetime.datetime.now(datetime.timezone.utc)
    days = datetime.timedelta(days=1)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(name("Test Root CA"))
        .issuer_name(name("Test Root CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - days)
        .not_valid_after(now + 30 * days)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )
        .sign(ca_key, hashes.SHA256())
    )
    leaf = (
        x509.CertificateBuilder()
        .subject_name(name("archive-colorize signer"))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - days)
        .not_valid_after(now + 30 * days)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(True, False, False, False, False, False, False, False, False), critical=True
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    d = tmp_path_factory.mktemp("c2pa")
    (d / "chain.pem").write_bytes(
        leaf.public_bytes(serialization.Encoding.PEM) + ca.public_bytes(serialization.Encoding.PEM)
    )
    (d / "key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return d / "chain.pem", d / "key.pem"


def verify(data: bytes, mime: str) -> dict:
    """c2pa's Reader: the manifest, with the claim signature valid (the test CA is, rightly,
    not a trusted root, so that is the one complaint allowed)."""
    reader = c2pa.Reader(mime, io.BytesIO(data))
    store = json.loads(reader.json())
    problems = [s["code"] for s in store.get("validation_status") or []]
    assert problems in ([], ["signingCredential.untrusted"]), problems
    assert reader.get_validation_state() in ("Valid", "Trusted")
    return store["manifests"][store["active_manifest"]]


def check_manifest(m: dict) -> None:
    actions = next(a for a in m["assertions"] if a["label"].startswith("c2pa.actions"))["data"]["actions"]
    assert [a["action"] for a in actions] == ["c2pa.opened", "c2pa.edited", "c2pa.color_adjustments"]
    assert actions[2]["digitalSourceType"] == DIGITAL_SOURCE_TYPE
    assert actions[0]["parameters"]["ingredients"]  # the source scan
    assert actions[1]["digitalSourceType"] == DIGITAL_SOURCE_TYPE
    assert actions[1]["softwareAgent"]["name"] == "archive-colorize"
    assert [i["relationship"] for i in m["ingredients"]] == ["parentOf"]


@pytest.mark.parametrize("fmt,mime", [("jpeg", "image/jpeg"), ("png", "image/png")])
def test_colorize_signs_each_output(chain, weights_path, tmp_path, fmt, mime):
    out = tmp_path / "out"
    r = CliRunner().invoke(
        app,
        [
            "colorize",
            str(sample("chelsea.jpg")),
            "--out",
            str(out),
            "--weights",
            str(weights_path),
            "--format",
            fmt,
            "--working-size",
            "128",
            "--c2pa-cert",
            str(chain[0]),
            "--c2pa-key",
            str(chain[1]),
        ],
    )
    assert r.exit_code == 0, r.output
    data = next(out.iterdir()).read_bytes()
    m = verify(data, mime)
    check_manifest(m)
    assert DIGITAL_SOURCE_TYPE.encode() in data  # the XMP, written before signing, is still there
    assert [i["title"] for i in m["ingredients"]] == [str(sample("chelsea.jpg"))]
    # no thumbnails (of the output, of the source): the manifest is a few KB, not a picture
    assert "thumbnail" not in m and not any("thumbnail" in i for i in m["ingredients"])


@pytest.mark.parametrize(
    "recombine_on", ["finish", "actor"]
)  # actor: the scan is read again only as the ingredient
def test_run_signs_each_output(chain, ray_cluster, weights_path, tmp_path, recombine_on):
    from archive_colorize.run.pipeline import RunOptions, run

    s = run(
        RunOptions(
            manifest=str(ROOT / "manifests" / "sample.parquet"),
            out=str(tmp_path / "out"),
            weights=str(weights_path),
            working_size=64,
            fmt="jpeg",
            limit=2,
            c2pa_cert=str(chain[0]),
            c2pa_key=str(chain[1]),
            recombine_on=recombine_on,
        )
    )
    assert s.done == 2
    titles = []
    for p in sorted((tmp_path / "out" / "images").iterdir()):
        m = verify(p.read_bytes(), "image/jpeg")
        check_manifest(m)
        titles += [i["title"] for i in m["ingredients"]]
    # each ingredient is the row: its id and source uri
    assert all(re.fullmatch(r"\S+: \S+\.(jpg|png)", t) for t in titles) and len(set(titles)) == 2, titles


def test_bad_credentials_are_refused_before_work(chain, tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match="^--c2pa-cert and --c2pa-key go together$"):
        c2pa_credentials(str(chain[0]), None, "png", {})
    with pytest.raises(ConfigError, match="^cannot use the C2PA certificate .*missing.pem"):
        c2pa_credentials(str(tmp_path / "missing.pem"), str(chain[1]), "png", {})
    monkeypatch.setitem(sys.modules, "c2pa", None)  # as in an install without the extra
    with pytest.raises(ConfigError, match="need the optional C2PA extra, which is not installed") as e:
        c2pa_credentials(str(chain[0]), str(chain[1]), "png", {})
    assert e.value.hint == "pip install 'archive-colorize[c2pa]'"


def test_run_signs_a_reels_mp4_access_copy(chain, ray_cluster, weights_path, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from archive_colorize.run.pipeline import RunOptions, run

    from .clips import make_clip

    make_clip(tmp_path / "reel.mkv", frames_per_shot=6)
    pq.write_table(pa.table({"id": ["reel"], "uri": [str(tmp_path / "reel.mkv")]}), tmp_path / "m.parquet")
    cert, key = chain
    s = run(RunOptions(manifest=str(tmp_path / "m.parquet"), out=str(tmp_path / "out"), weights=str(weights_path),
                       working_size=64, c2pa_cert=str(cert), c2pa_key=str(key)))  # fmt: skip
    assert (s.done, s.failed) == (1, 0)
    data = (tmp_path / "out" / "video" / "reel.mp4").read_bytes()
    m = verify(data, "video/mp4")
    check_manifest(m)
    assert m["title"] == "reel"
    assert b"compositeWithTrainedAlgorithmicMedia" in data  # the XMP box is still there beside it
