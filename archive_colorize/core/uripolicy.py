"""What a worker may fetch, decided by the operator, never by a document from elsewhere.

A folder or S3 prefix the operator lists, or a manifest the operator wrote, is trusted: its
rows may name any location fsspec can open, as before. Rows that came from a document
fetched over http(s) (a IIIF manifest or collection, a NARA export by URL) are untrusted:

- they may name only http(s) URLs;
- the host must resolve to public addresses only: loopback, link-local (169.254.0.0/16,
  the cloud metadata service; fe80::/10), private (RFC 1918, fc00::/7), multicast,
  reserved and unspecified addresses are refused, on the first request and on every
  redirect hop, and a redirect may not leave http(s); hops are bounded;
- credentials and headers from --storage-options go only to the origin they were set for
  (the document the operator named), never to a host that only the document names.

`--allow-uri PREFIX` (repeatable) opens exactly what the operator needs, such as an
internal IIIF host: a URI that starts with an allowed prefix passes every rule.

A check that resolves a name and a connection that resolves it again can disagree (DNS
rebinding); the redirect-by-redirect check bounds what a document can reach, not what a
hostile DNS server can.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass, field
from urllib.parse import urljoin, urlsplit

from archive_colorize.errors import ColorizeError

HTTP = ("http", "https")


def is_http(uri: str) -> bool:
    """Whether `uri` is fetched over the web (a browser can load it; the policy checks it)."""
    return urlsplit(uri).scheme.lower() in HTTP


MAX_REDIRECTS = 5
CONNECT_TIMEOUT_S = 10.0
READ_TIMEOUT_S = 60.0


class UriRefused(ColorizeError):
    """A URI the policy does not allow; the message names the rule."""

    hint = "if the operator means to fetch it, give --allow-uri with its prefix"


def origin(uri: str) -> str:
    """scheme://host:port, lower case, with the default port made explicit."""
    u = urlsplit(uri)
    port = u.port or {"http": 80, "https": 443}.get(u.scheme.lower(), 0)
    return f"{u.scheme.lower()}://{(u.hostname or '').lower()}:{port}"


def _address_kind(ip: ipaddress._BaseAddress) -> str | None:
    """Why an address may not be fetched for an untrusted row, or None."""
    if getattr(ip, "ipv4_mapped", None):
        ip = ip.ipv4_mapped
    for kind in ("unspecified", "loopback", "link_local", "multicast", "private", "reserved"):
        if getattr(ip, f"is_{kind}"):
            return kind.replace("_", "-")
    if not ip.is_global:
        return "non-global"
    return None


def resolve_host(host: str, port: int) -> list[str]:
    try:
        return sorted({info[4][0] for info in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)})
    except socket.gaierror as e:
        raise UriRefused(f"cannot resolve {host}: {e.strerror}", hint="check the host name") from None


@dataclass(frozen=True)
class UriPolicy:
    untrusted: bool = False  # the rows were named by a document fetched from elsewhere
    allow: tuple[str, ...] = ()  # the operator's --allow-uri prefixes
    trusted_origin: str | None = None  # where --storage-options' headers may go
    resolver: object = field(default=resolve_host, compare=False, repr=False)

    def allowed_by_operator(self, uri: str) -> bool:
        return any(uri.startswith(p) for p in self.allow)

    def check(self, uri: str) -> None:
        """Raise UriRefused naming the rule, or return: the URI may be fetched."""
        if not self.untrusted or self.allowed_by_operator(uri):
            return
        u = urlsplit(uri)
        scheme = u.scheme.lower() or "file"
        if scheme not in HTTP:
            raise UriRefused(f"{scheme}:// is refused for rows from a remote document (rule: http(s) only)")
        if not u.hostname:
            raise UriRefused("a URL without a host is refused (rule: http(s) only)")
        try:
            literal = ipaddress.ip_address(u.hostname)
            addresses = [str(literal)]
        except ValueError:
            addresses = self.resolver(u.hostname, u.port or (443 if scheme == "https" else 80))
        for a in addresses:
            kind = _address_kind(ipaddress.ip_address(a.split("%", 1)[0]))
            if kind:
                article = "an" if kind[0] in "aeiou" else "a"
                raise UriRefused(
                    f"{u.hostname} is {article} {kind} address ({a}) (rule: public addresses only)"
                )

    def credentials_for(self, uri: str, storage_options: dict) -> dict:
        """The storage options a fetch of `uri` may carry. Trusted rows: all. Untrusted
        http(s) rows: only on the origin of the document the operator named (an allowed
        prefix opens a host, it does not hand it the headers set for another). Another
        scheme the operator allowed (s3://their-bucket/): the operator's options."""
        if not self.untrusted:
            return storage_options
        if is_http(uri):
            return storage_options if self.trusted_origin and origin(uri) == self.trusted_origin else {}
        return storage_options if self.allowed_by_operator(uri) else {}


TRUSTED = UriPolicy()


def fetch_http(
    uri: str, policy: UriPolicy, storage_options: dict | None = None, max_bytes: int | None = None
) -> bytes:
    """GET an http(s) URL for an untrusted row: every hop checked, redirects bounded,
    timeouts on connect and read, at most `max_bytes` read. Raises UriRefused, or OSError
    (FileNotFoundError for a 404) for the caller to word."""
    import urllib3

    http = urllib3.PoolManager(
        timeout=urllib3.Timeout(connect=CONNECT_TIMEOUT_S, read=READ_TIMEOUT_S), retries=False
    )
    url = uri
    for _hop in range(MAX_REDIRECTS + 1):
        policy.check(url)
        headers = dict((policy.credentials_for(url, storage_options or {}) or {}).get("headers") or {})
        try:
            r = http.request("GET", url, headers=headers, redirect=False, preload_content=False)
        except urllib3.exceptions.HTTPError as e:
            raise OSError(f"cannot fetch: {type(e).__name__}") from None
        try:
            if r.status in (301, 302, 303, 307, 308):
                target = r.headers.get("Location")
                if not target:
                    raise OSError(f"HTTP {r.status} without a Location")
                nxt = urljoin(url, target)
                if urlsplit(nxt).scheme.lower() not in HTTP:
                    raise UriRefused(
                        f"a redirect to {urlsplit(nxt).scheme}:// is refused (rule: redirects stay http(s))"
                    )
                url = nxt
                continue
            if r.status == 404:
                raise FileNotFoundError(uri)
            if r.status >= 400:
                raise OSError(f"HTTP {r.status}")
            data = r.read(amt=None if max_bytes is None else max_bytes + 1)
            if max_bytes is not None and len(data) > max_bytes:
                raise OSError(f"larger than the limit of {max_bytes} bytes")
            return data
        finally:
            r.release_conn()
    raise UriRefused(f"more than {MAX_REDIRECTS} redirects (rule: bounded redirects)")
