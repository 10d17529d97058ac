"""IIIF Presentation manifests (3 and 2.1) and collections -> manifest rows.

One row per painting image of each canvas. The image is asked of its IIIF Image service
(`{service}/full/max/0/default.jpg`, or `full/!N,N/...` with a size limit), or taken by the
body's own id when there is no service. Collections are walked recursively. The JSON is
read directly: it is two small schemas, and iiif-prezi3 builds version 3 only.
A malformed document is refused with the JSON path of the fault.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter


from archive_colorize.core.uripolicy import UriPolicy, UriRefused, fetch_http, is_http, origin
from archive_colorize.errors import ManifestError, one_line

MAX_DOCUMENT_BYTES = 64 * 2**20  # a manifest of 10,000 canvases is a few MB
MAX_DOCUMENTS = 10_000  # collections of collections: a cycle or a runaway crawl stops here


class _Doc:
    """A JSON document being read, with the path of each value for error messages."""

    def __init__(self, url: str):
        self.url = url

    def fail(self, path: str, what: str):
        raise ManifestError(f"IIIF {self.url}: {path}: {what}")

    def get(self, obj, key: str, path: str, kind=None, required: bool = True):
        if not isinstance(obj, dict):
            self.fail(path, f"expected an object, found {type(obj).__name__}")
        if key not in obj:
            if required:
                self.fail(f"{path}.{key}", "missing")
            return None
        value = obj[key]
        if kind is not None and not isinstance(value, kind):
            names = " or ".join(k.__name__ for k in (kind if isinstance(kind, tuple) else (kind,)))
            self.fail(f"{path}.{key}", f"expected {names}, found {type(value).__name__}")
        return value


def _text(value) -> str | None:
    """A IIIF label/value in any version -> its first string: v3 language maps
    ({"en": ["x"]}), v2 strings, {"@value": ...} objects and lists of those."""
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return next((t for t in map(_text, value) if t), None)
    if isinstance(value, dict):
        if "@value" in value:
            return _text(value["@value"])
        for lang in ("en", "none", *value.keys()):
            if lang in value:
                t = _text(value[lang])
                if t:
                    return t
    return None


def _metadata(pairs) -> str | None:
    if not isinstance(pairs, list):
        return None
    return json.dumps(
        [
            {"label": _text(p.get("label")), "value": _text(p.get("value"))}
            for p in pairs
            if isinstance(p, dict)
        ],
        ensure_ascii=False,
    )


COLOURED = "Colorized by a trained model (archive-colorize)"  # the label sinks/iiif.py gives the colour


def _image_api(s: dict, default: int) -> int:
    """The Image API major version of a service (1, 2 or 3), from its type, context or
    profile; `default` (the Presentation version's usual one) when it says nothing."""
    kind = str(s.get("type", s.get("@type", "")))
    if kind == "ImageService3":
        return 3
    if kind == "ImageService2":
        return 2
    if kind == "ImageService1":
        return 1
    said = " ".join(str(s.get(k, "")) for k in ("@context", "profile"))
    if "library.stanford.edu/iiif/image-api" in said or "/api/image/1/" in said:
        return 1
    if "/api/image/2/" in said:
        return 2
    if "/api/image/3/" in said:
        return 3
    return default


def _service(service, default: int) -> tuple[str, int] | None:
    services = service if isinstance(service, list) else [service]
    for s in services:
        if isinstance(s, dict) and (
            "ImageService" in str(s.get("type", s.get("@type", "")))
            or "image" in str(s.get("profile", ""))
            or "@context" in s
            and "image" in str(s["@context"])
        ):
            sid = (s.get("id") or s.get("@id") or "").rstrip("/")
            if sid:
                return sid, _image_api(s, default)
    return None


# the request for the whole image, by Image API version: 1.x has neither `max` nor
# `default` (`full`/`native`); 2.0 has no `max` (2.1 still accepts `full`); 3 has no `full` size
_FULL = {1: ("full", "native"), 2: ("full", "default"), 3: ("max", "default")}


def image_url(body: dict, max_size: int | None, default_api: int = 3) -> str | None:
    found = _service(body.get("service"), default_api)
    if found:
        service, api = found
        full, quality = _FULL[api]
        size = f"!{max_size},{max_size}" if max_size else full
        return f"{service}/full/{size}/0/{quality}.jpg"
    return body.get("id") or body.get("@id")


def row_id(canvas_id: str, k: int, n: int) -> str:
    """A stable, file-system-safe id from the canvas id (plus the image's index when a
    canvas paints several)."""
    path = re.sub(r"^[a-z]+://[^/]+/", "", canvas_id)
    clean = re.sub(r"[^A-Za-z0-9._-]+", "_", path).strip("._-") or "canvas"
    if len(clean) > 100:
        clean = f"{clean[-80:].strip('._-')}-{hashlib.sha256(canvas_id.encode()).hexdigest()[:12]}"
    return clean if n == 1 else f"{clean}-{k + 1}"


def _rows_v3(doc: _Doc, m: dict, max_size: int | None) -> list[dict]:
    mid = doc.get(m, "id", "$", str)
    common = {
        "iiif_manifest": mid,
        "rights": m.get("rights"),
        "required_statement": _text((m.get("requiredStatement") or {}).get("value")),
        "metadata": _metadata(m.get("metadata")),
    }
    rows = []
    for ci, canvas in enumerate(doc.get(m, "items", "$", list)):
        cpath = f"$.items[{ci}]"
        cid = doc.get(canvas, "id", cpath, str)
        bodies = []
        for pi, page in enumerate(doc.get(canvas, "items", cpath, list, required=False) or []):
            for ai, anno in enumerate(doc.get(page, "items", f"{cpath}.items[{pi}]", list)):
                apath = f"{cpath}.items[{pi}].items[{ai}]"
                if doc.get(anno, "motivation", apath, (str, list), required=False) not in (
                    None,
                    "painting",
                    ["painting"],
                ):
                    continue
                body = doc.get(anno, "body", apath, (dict, list))
                body = body[0] if isinstance(body, list) and body else body
                if isinstance(body, dict) and body.get("type") == "Choice":
                    choices = doc.get(body, "items", f"{apath}.body", list) or [None]
                    # a manifest archive-colorize wrote: its first item is the colour, which
                    # would be coloured again; the original is the scan to read
                    ours = [
                        isinstance(c, dict) and (_text(c.get("label")) or "").startswith(COLOURED)
                        for c in choices
                    ]
                    body = (
                        next((c for c, o in zip(choices, ours) if not o), None) if any(ours) else choices[0]
                    )
                if not isinstance(body, dict):
                    doc.fail(f"{apath}.body", "expected an image resource")
                if body.get("type", "Image") != "Image":
                    continue
                bodies.append(_image(doc, body, f"{apath}.body", max_size, 3))
        rows += _canvas_rows(cid, bodies, _text(canvas.get("label")) or _text(m.get("label")), common)
    return rows


def _image(doc: _Doc, resource: dict, path: str, max_size: int | None, api: int) -> tuple[str, str]:
    url = image_url(resource, max_size, api)
    if not url:
        doc.fail(path, "has neither an id nor an image service")
    return url, path


def _canvas_rows(cid: str, bodies: list[tuple[str, str]], title: str | None, common: dict) -> list[dict]:
    # _path: where in the document the image was named, for a refusal (dropped before writing).
    # A canvas that paints the same image twice (two annotations of one resource) is one row.
    seen: set = set()
    bodies = [(u, p) for u, p in bodies if not (u in seen or seen.add(u))]
    return [
        {
            "id": row_id(cid, k, len(bodies)),
            "uri": u,
            "title": title,
            "iiif_canvas": cid,
            **common,
            "_path": p,
        }
        for k, (u, p) in enumerate(bodies)
    ]


def _rows_v2(doc: _Doc, m: dict, max_size: int | None) -> list[dict]:
    mid = doc.get(m, "@id", "$", str)
    common = {
        "iiif_manifest": mid,
        "rights": _text(m.get("license")),
        "required_statement": _text(m.get("attribution")),
        "metadata": _metadata(m.get("metadata")),
    }
    rows = []
    for si, seq in enumerate(doc.get(m, "sequences", "$", list)):
        for ci, canvas in enumerate(doc.get(seq, "canvases", f"$.sequences[{si}]", list)):
            cpath = f"$.sequences[{si}].canvases[{ci}]"
            cid = doc.get(canvas, "@id", cpath, str)
            bodies = []
            for ii, anno in enumerate(doc.get(canvas, "images", cpath, list, required=False) or []):
                resource = doc.get(anno, "resource", f"{cpath}.images[{ii}]", dict)
                if resource.get("@type") == "oa:Choice":
                    resource = resource.get("default") or {}
                bodies.append(_image(doc, resource, f"{cpath}.images[{ii}].resource", max_size, 2))
            rows += _canvas_rows(cid, bodies, _text(canvas.get("label")) or _text(m.get("label")), common)
    return rows


def _load(url: str, storage_options: dict | None, policy: UriPolicy | None = None) -> dict:
    """The operator's own document (policy None) through fsspec; a member that a remote
    document names through the policy's checked fetch."""
    from archive_colorize.core.storage import open_url

    try:
        if policy is None:
            with open_url(url, "rb", storage_options) as f:
                raw = f.read(MAX_DOCUMENT_BYTES + 1)
        else:
            raw = fetch_http(url, policy, storage_options, MAX_DOCUMENT_BYTES)
        if len(raw) > MAX_DOCUMENT_BYTES:
            raise ManifestError(
                f"IIIF {url}: larger than {MAX_DOCUMENT_BYTES // 2**20} MiB, the limit for a document"
            )
        data = json.loads(raw)
    except FileNotFoundError:
        raise ManifestError(f"IIIF document not found: {url}") from None
    except json.JSONDecodeError as e:
        raise ManifestError(f"IIIF {url}: not JSON ({e.msg} at line {e.lineno} column {e.colno})") from None
    except RecursionError:
        raise ManifestError(f"IIIF {url}: JSON nested too deeply") from None
    except OSError as e:
        raise ManifestError(f"cannot read IIIF document {url}: {one_line(e, 300)}") from None
    if not isinstance(data, dict):
        raise ManifestError(f"IIIF {url}: $: expected an object, found {type(data).__name__}")
    return data


def document_policy(url: str, allow: tuple[str, ...] = ()) -> UriPolicy:
    """A document the operator names over http(s) is trusted; what it names is not."""
    remote = is_http(url)
    return UriPolicy(untrusted=remote, allow=tuple(allow), trusted_origin=origin(url) if remote else None)


def iiif_rows(
    url: str,
    max_size: int | None = None,
    storage_options: dict | None = None,
    allow: tuple[str, ...] = (),
    refused: list | None = None,
    unreachable: list | None = None,
) -> list[dict]:
    """A IIIF Manifest or Collection (3 or 2.1), by URL or path -> manifest rows.

    The URI policy (core/uripolicy.py) applies to what a remote document names: a member
    document it refuses stops the build with its JSON path; an image it refuses is left
    out, and (JSON path, uri, rule) is appended to `refused`. A member that cannot be read
    (gone, down, not JSON) is skipped and (JSON path, uri, why) appended to `unreachable`:
    one dead link must not stop a collection of thousands."""
    policy = document_policy(url, allow)
    rows: list[dict] = []
    todo, seen = [(url, None)], set()
    while todo:
        u, where = todo.pop(0)
        if u in seen:
            continue
        seen.add(u)
        if len(seen) > MAX_DOCUMENTS:
            raise ManifestError(f"IIIF {url}: more than {MAX_DOCUMENTS} documents under this collection")
        if where is not None:  # a member: named by a document, not by the operator
            try:
                policy.check(u)
            except UriRefused as e:
                raise ManifestError(f"IIIF {where[0]}: {where[1]}: {u}: {e}", hint=e.hint) from None
        doc = _Doc(u)
        try:
            data = _load(
                u,
                storage_options if where is None else policy.credentials_for(u, storage_options or {}),
                None if where is None else policy,
            )
        except UriRefused as e:
            raise ManifestError(f"IIIF {where[0]}: {where[1]}: {u}: {e}", hint=e.hint) from None
        except ManifestError as e:
            if where is None or unreachable is None:
                raise
            unreachable.append((f"{where[0]} {where[1]}", u, str(e)))
            continue
        kind = str(data.get("type") or data.get("@type") or "")
        if kind in ("Manifest", "sc:Manifest"):
            rows += (_rows_v3 if kind == "Manifest" else _rows_v2)(doc, data, max_size)
        elif kind == "Collection":
            todo += [
                (doc.get(item, "id", f"$.items[{i}]", str), (u, f"$.items[{i}]"))
                for i, item in enumerate(doc.get(data, "items", "$", list))
            ]
        elif kind == "sc:Collection":
            members = [
                *(data.get("collections") or []),
                *(data.get("manifests") or []),
                *(data.get("members") or []),
            ]
            todo += [
                (doc.get(item, "@id", f"$.members[{i}]", str), (u, f"$.members[{i}]"))
                for i, item in enumerate(members)
            ]
        else:
            doc.fail("$.type", f"expected a Manifest or Collection, found {kind or 'nothing'}")
    # the same manifest reached twice (two collections list it) gives the same rows once;
    # the same canvas id in two different manifests gets the manifest's hash appended
    counts = Counter(r["id"] for r in {(r["id"], r["iiif_manifest"]): r for r in rows}.values())
    out: dict[str, dict] = {}
    for r in rows:
        path = r.pop("_path")
        try:
            policy.check(r["uri"])
        except UriRefused as e:
            if refused is not None:
                refused.append((f"{r['iiif_manifest']} {path}", r["uri"], str(e)))
            continue
        if counts[r["id"]] > 1:
            r = {**r, "id": f"{r['id']}-{hashlib.sha256(r['iiif_manifest'].encode()).hexdigest()[:8]}"}
        out.setdefault(r["id"], r)
    return list(out.values())
