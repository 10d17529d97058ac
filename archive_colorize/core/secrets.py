"""Secrets never written: what leaves the process (run.json, results.parquet, the IIIF
manifest, the report, logs) is passed through here first.

A URI loses its userinfo (`user:password@`) and the query parameters that sign or
authorise it: S3 and GCS presigned URLs (X-Amz-*, X-Goog-*), Azure SAS (sig, se, sp...),
CloudFront (Signature, Policy, Key-Pair-Id, Expires) and plain tokens. Storage options
lose every value under a key that names a secret, and any value that looks like one.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

MASK = "***"
_SECRET_KEYS = (
    "key",
    "secret",
    "token",
    "password",
    "passwd",
    "session",
    "credential",
    "auth",
    "signature",
    "cookie",
)
# query parameters that are a signature or a credential, compared in lower case
_SIGNED_PARAMS = {
    "sig", "signature", "se", "sp", "sv", "ss", "srt", "st", "spr", "skoid", "sktid", "skt", "ske", "sks", "skv",
    "expires", "policy", "key-pair-id", "token", "access_token", "id_token", "api_key", "apikey", "key", "auth",
    "googleaccessid", "awsaccesskeyid", "x-amz-security-token",
}  # fmt: skip
_SIGNED_PREFIXES = ("x-amz-", "x-goog-")
# values that are secrets whatever their key: an AWS access key id, an HTTP credential
_SECRET_VALUE = re.compile(r"^(?:(?:AKIA|ASIA)[0-9A-Z]{16}|(?:Bearer|Basic|Token)\s+\S+)$", re.IGNORECASE)
_URL_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>]+")


def _signed(name: str) -> bool:
    n = name.lower()
    return n in _SIGNED_PARAMS or n.startswith(_SIGNED_PREFIXES)


def scrub_uri(uri: str | None) -> str | None:
    """`https://u:p@host/a?X-Amz-Signature=..&page=2` -> `https://host/a?page=2`."""
    if not uri or "://" not in uri:
        return uri
    try:
        u = urlsplit(uri)
    except ValueError:
        return MASK
    netloc = u.netloc.rsplit("@", 1)[1] if "@" in u.netloc else u.netloc
    query = u.query
    if query:
        kept = [(k, v) for k, v in parse_qsl(query, keep_blank_values=True) if not _signed(k)]
        query = urlencode(kept)
    return urlunsplit((u.scheme, netloc, u.path, query, u.fragment))


def scrub_text(text: str | None) -> str | None:
    """Every URI inside a message (an error, a log line) scrubbed."""
    if not text or "://" not in text:
        return text
    return _URL_IN_TEXT.sub(lambda m: scrub_uri(m.group(0)), text)


def redact(obj):
    """Options as they may be written down: every value under a key that names a secret,
    any value that looks like one, at any depth (config_kwargs, client_kwargs, headers,
    lists); URIs scrubbed."""
    if isinstance(obj, dict):
        return {
            k: (
                MASK
                if any(w in str(k).lower() for w in _SECRET_KEYS) and not isinstance(v, (dict, list))
                else redact(v)
            )
            for k, v in obj.items()
        }
    if isinstance(obj, (list, tuple)):
        return [redact(v) for v in obj]
    if isinstance(obj, str):
        if _SECRET_VALUE.match(obj.strip()):
            return MASK
        return scrub_text(obj)
    return obj
