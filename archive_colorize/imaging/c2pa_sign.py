"""Optional C2PA content credentials for every output (`pip install 'archive-colorize[c2pa]'`).

Each file is signed with the archive's certificate chain and key. Its manifest records
`c2pa.opened` of the source scan, as a `parentOf` ingredient, then `c2pa.edited` with the
same IPTC digital source type as the XMP and archive-colorize as the software agent, and
`c2pa.color_adjustments` (the spec's action for tone and saturation) the same way. The
XMP is written before signing: any later change would break the signature.

The chain and key are read by path or URL in the process that signs (a Ray task), once per
process, so that key material never travels through Ray's object store.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field

from archive_colorize import __version__
from archive_colorize.core.formats import FORMAT_TABLE
from archive_colorize.errors import ConfigError, one_line
from archive_colorize.imaging.provenance import DIGITAL_SOURCE_TYPE

MIME = {f.name: f.mime for f in FORMAT_TABLE}
SOURCE_MIME = {
    "JPEG": "image/jpeg",
    "PNG": "image/png",
    "TIFF": "image/tiff",
    "WEBP": "image/webp",
    "GIF": "image/gif",
    "BMP": "image/bmp",
}
EXTRA = "pip install 'archive-colorize[c2pa]'"
_SIGNERS: dict = {}


@dataclass(frozen=True)
class Credentials:
    cert: str  # PEM certificate chain, the signing certificate first: a path or URL
    key: str  # PEM private key: a path or URL
    storage_options: dict = field(default_factory=dict, hash=False, compare=False)


def _library():
    try:
        import c2pa
    except ImportError:
        raise ConfigError(
            "--c2pa-cert/--c2pa-key need the optional C2PA extra, which is not installed", hint=EXTRA
        ) from None
    return c2pa


def _algorithm(key_pem: bytes) -> bytes:
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    key = load_pem_private_key(key_pem, password=None)
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return {"secp256r1": b"es256", "secp384r1": b"es384", "secp521r1": b"es512"}[key.curve.name]
    if isinstance(key, rsa.RSAPrivateKey):
        return b"ps256"
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return b"ed25519"
    raise ValueError(f"unsupported key type {type(key).__name__}")


def _signer(creds: Credentials):
    if creds not in _SIGNERS:
        from archive_colorize.core.storage import read_bytes, resolve

        c2pa = _library()
        try:
            chain, key = (read_bytes(*resolve(u, creds.storage_options)) for u in (creds.cert, creds.key))
            info = c2pa.C2paSignerInfo(alg=_algorithm(key), sign_cert=chain, private_key=key, ta_url=None)
            _SIGNERS[creds] = c2pa.Signer.from_info(info)
        except (OSError, ValueError, KeyError, c2pa.C2paError) as e:
            raise ConfigError(
                f"cannot use the C2PA certificate {creds.cert} and key {creds.key}: {one_line(e, 300)}",
                hint="a PEM chain (signing certificate first) and its unencrypted PEM key",
            ) from None
    return _SIGNERS[creds]


def sign(
    blob: bytes,
    fmt: str,
    source: bytes | None,
    source_format: str | None,
    title: str,
    creds: Credentials,
    ingredient_title: str = "",
    mime: str | None = None,
) -> bytes:
    """The encoded output (its XMP already written) -> the same file with a C2PA manifest.
    The ingredient is titled by the row (`ingredient_title`: its id and source URI). No
    thumbnails: c2pa would embed one of the output and one of the source in each file (a
    6 KB WebP grew by 169 KB), and the file is its own picture."""
    c2pa = _library()
    manifest = {
        "claim_generator_info": [{"name": "archive-colorize", "version": __version__}],
        "title": title,
        "format": mime or MIME[fmt],
        "assertions": [
            {
                "label": "c2pa.actions",
                "data": {
                    "actions": [
                        {"action": "c2pa.opened", "parameters": {"ingredientIds": ["source-scan"]}},
                        {
                            "action": "c2pa.edited",
                            "digitalSourceType": DIGITAL_SOURCE_TYPE,
                            "softwareAgent": {"name": "archive-colorize", "version": __version__},
                            "description": "colour added by a trained model; the lightness is the scan's own",
                        },
                        # the spec's own name for what changed (hue and saturation), beside the
                        # general edit that readers look to for the AI disclosure
                        {
                            "action": "c2pa.color_adjustments",
                            "digitalSourceType": DIGITAL_SOURCE_TYPE,
                            "softwareAgent": {"name": "archive-colorize", "version": __version__},
                            "parameters": {"com.archive-colorize.channels": "a*b* (CIE L*a*b*)"},
                        },
                    ]
                },
            }
        ],
    }
    context = c2pa.Context.from_dict({"builder": {"thumbnail": {"enabled": False}}})
    builder = c2pa.Builder(json.dumps(manifest), context=context)
    ingredient = {
        "title": ingredient_title or "source scan",
        "relationship": "parentOf",
        "label": "source-scan",
    }
    builder.add_ingredient(
        json.dumps(ingredient), SOURCE_MIME.get(source_format or "", "image/jpeg"), io.BytesIO(source or b"")
    )
    out = io.BytesIO()
    builder.sign(_signer(creds), mime or MIME[fmt], io.BytesIO(blob), out)
    return out.getvalue()


def check(creds: Credentials, fmt: str) -> None:
    """Before any work: the extra is there, the chain and key load, and a tiny file signs."""
    from PIL import Image

    if fmt not in MIME:
        raise ConfigError(f"C2PA signing supports {', '.join(MIME)}, not --format {fmt}")
    probe = io.BytesIO()
    Image.new("RGB", (8, 8), (120, 100, 80)).save(probe, "JPEG")
    try:
        sign(probe.getvalue(), "jpeg", probe.getvalue(), "JPEG", "probe", creds)
    except ConfigError:
        raise
    except Exception as e:
        raise ConfigError(
            f"C2PA signing with {creds.cert} failed: {one_line(e, 300)}",
            hint="check the certificate chain: the signing certificate first, not a CA, with digitalSignature",
        ) from None
