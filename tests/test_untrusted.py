"""Untrusted documents stay untrusted: a IIIF manifest from elsewhere, served on loopback,
names a local file, an internal admin URL, an FTP server, the cloud metadata address and a
redirect to loopback. Only what the operator allows (--allow-uri) is fetched."""

import json
import threading
from functools import partial
from http.server import BaseHTTPRequestHandler, SimpleHTTPRequestHandler, ThreadingHTTPServer

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from archive_colorize.apps.cli import app
from archive_colorize.core.uripolicy import UriPolicy, UriRefused, origin
from archive_colorize.run.pipeline import RunOptions, run

from .conftest import sample

runner = CliRunner()


class _Recorder(BaseHTTPRequestHandler):
    """An internal service that must never be reached: it records every request."""

    hits: list = []

    def do_GET(self):
        self.hits.append((self.path, dict(self.headers)))
        self.send_response(200)
        self.end_headers()
        self.wfile.write(sample("astronaut.jpg").read_bytes())

    def log_message(self, *a):
        pass


class _Site(SimpleHTTPRequestHandler):
    """The remote institution's server: documents, images, and one redirect."""

    seen: list = []
    redirect_to = ""

    def do_GET(self):
        self.seen.append((self.path, dict(self.headers)))
        if self.path == "/redirect.jpg":
            self.send_response(302)
            self.send_header("Location", self.redirect_to)
            self.end_headers()
            return
        super().do_GET()

    def log_message(self, *a):
        pass


def _serve(handler):
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd, f"http://127.0.0.1:{httpd.server_address[1]}"


def _canvas(base, n, image):
    return {
        "id": f"{base}/canvas/{n}",
        "type": "Canvas",
        "items": [
            {
                "id": f"{base}/page/{n}",
                "type": "AnnotationPage",
                "items": [
                    {
                        "id": f"{base}/anno/{n}",
                        "type": "Annotation",
                        "motivation": "painting",
                        "body": {"id": image, "type": "Image", "format": "image/jpeg"},
                        "target": f"{base}/canvas/{n}",
                    }
                ],
            }
        ],
    }


@pytest.fixture
def hostile(tmp_path):
    """The remote site (a IIIF manifest and a collection) and an internal admin service."""
    _Recorder.hits, _Site.seen = [], []
    admin, admin_url = _serve(_Recorder)
    root = tmp_path / "www"
    (root / "images").mkdir(parents=True)
    (root / "images" / "astronaut.jpg").write_bytes(sample("astronaut.jpg").read_bytes())
    private = tmp_path / "private.png"
    private.write_bytes(sample("coins.png").read_bytes())
    (tmp_path / "private.json").write_text("{}")
    site, base = _serve(partial(_Site, directory=str(root)))
    _Site.redirect_to = f"{admin_url}/internal-admin/via-redirect"
    images = [
        f"{base}/images/astronaut.jpg",  # legitimate, but on loopback
        f"file://{private}",
        f"{admin_url}/internal-admin/delete?all=1",
        "ftp://127.0.0.1:2121/scan.jpg",
        "http://169.254.169.254/latest/meta-data/iam/",
        f"{base}/redirect.jpg",  # a 302 to the admin service
    ]
    manifest = {
        "@context": "http://iiif.io/api/presentation/3/context.json",
        "id": f"{base}/hostile.json",
        "type": "Manifest",
        "label": {"en": ["hostile"]},
        "items": [_canvas(base, n, u) for n, u in enumerate(images)],
    }
    (root / "hostile.json").write_text(json.dumps(manifest))
    collection = {
        "@context": "http://iiif.io/api/presentation/3/context.json",
        "id": f"{base}/collection.json",
        "type": "Collection",
        "label": {"en": ["c"]},
        "items": [{"id": f"file://{tmp_path / 'private.json'}", "type": "Manifest"}],
    }
    (root / "collection.json").write_text(json.dumps(collection))
    yield {"base": base, "admin": admin_url, "tmp": tmp_path}
    site.shutdown()
    admin.shutdown()


def test_the_policy_names_its_rule():
    p = UriPolicy(untrusted=True)
    cases = {
        "file:///etc/passwd": "file:// is refused for rows from a remote document (rule: http(s) only)",
        "ftp://example.org/x.jpg": "ftp:// is refused for rows from a remote document (rule: http(s) only)",
        "http://127.0.0.1:8080/a": "127.0.0.1 is a loopback address (127.0.0.1) (rule: public addresses only)",
        "http://169.254.169.254/x": "169.254.169.254 is a link-local address (169.254.169.254) (rule: public addresses only)",
        "http://10.1.2.3/x": "10.1.2.3 is a private address (10.1.2.3) (rule: public addresses only)",
        "http://[::1]/x": "::1 is a loopback address (::1) (rule: public addresses only)",
        "http://[fe80::1]/x": "fe80::1 is a link-local address (fe80::1) (rule: public addresses only)",
        "http://[fd00::1]/x": "fd00::1 is a private address (fd00::1) (rule: public addresses only)",
        "http://[::ffff:127.0.0.1]/x": "::ffff:127.0.0.1 is a loopback address (::ffff:7f00:1) (rule: public addresses only)",
        "http://0.0.0.0/x": "0.0.0.0 is an unspecified address (0.0.0.0) (rule: public addresses only)",
        "http://224.0.0.1/x": "224.0.0.1 is a multicast address (224.0.0.1) (rule: public addresses only)",
    }
    for uri, rule in cases.items():
        with pytest.raises(UriRefused) as e:
            p.check(uri)
        assert str(e.value) == rule, uri
    # a name is judged by what it resolves to
    rebinding = UriPolicy(untrusted=True, resolver=lambda host, port: ["93.184.216.34", "127.0.0.1"])
    with pytest.raises(UriRefused, match=r"^evil\.example is a loopback address \(127\.0\.0\.1\)"):
        rebinding.check("https://evil.example/x.jpg")
    public = UriPolicy(untrusted=True, resolver=lambda host, port: ["93.184.216.34"])
    public.check("https://iiif.example.org/a/full/max/0/default.jpg")
    # the operator's manifests are trusted, and --allow-uri opens exactly a prefix
    UriPolicy().check("file:///scans/a.tif")
    UriPolicy(untrusted=True, allow=("http://127.0.0.1:8080/",)).check("http://127.0.0.1:8080/a")
    with pytest.raises(UriRefused):
        UriPolicy(untrusted=True, allow=("http://127.0.0.1:8080/",)).check("http://127.0.0.1:8081/a")
    # headers go only to the origin they were set for
    so = {"headers": {"Authorization": "Bearer s3cr3t"}}
    p = UriPolicy(untrusted=True, trusted_origin=origin("https://museum.example/iiif/m.json"))
    assert p.credentials_for("https://museum.example:443/img/1.jpg", so) == so
    assert p.credentials_for("https://elsewhere.example/img/1.jpg", so) == {}


def test_manifest_build_leaves_out_what_a_remote_document_may_not_name(hostile, tmp_path):
    base, out = hostile["base"], tmp_path / "m.parquet"
    r = runner.invoke(
        app, ["manifest", "build", f"{base}/hostile.json", "--out", str(out)], terminal_width=400
    )
    lines = r.output.splitlines()
    rules = [line.split(": ", 2)[2] for line in lines if line.startswith("left out ")]
    assert rules == ["127.0.0.1 is a loopback address (127.0.0.1) (rule: public addresses only)",
                     "file:// is refused for rows from a remote document (rule: http(s) only)",
                     "127.0.0.1 is a loopback address (127.0.0.1) (rule: public addresses only)",
                     "ftp:// is refused for rows from a remote document (rule: http(s) only)",
                     "169.254.169.254 is a link-local address (169.254.169.254) (rule: public addresses only)",
                     "127.0.0.1 is a loopback address (127.0.0.1) (rule: public addresses only)"]  # fmt: skip
    assert f"left out {base}/hostile.json $.items[1].items[0].items[0].body: file://" in r.output
    assert r.exit_code == 1 and lines[-2] == f"Error: manifest build: no images in {base}/hostile.json"
    assert not out.exists() and _Recorder.hits == []
    # the collection's member is a local file: the build stops at its JSON path
    r = runner.invoke(
        app, ["manifest", "build", f"{base}/collection.json", "--out", str(out)], terminal_width=400
    )
    assert r.exit_code == 1
    assert r.output.splitlines()[0] == (
        f"Error: IIIF {base}/collection.json: $.items[0]: file://{hostile['tmp'] / 'private.json'}: "
        "file:// is refused for rows from a remote document (rule: http(s) only)"
    )


def test_with_allow_uri_the_legitimate_images_run_and_nothing_else_is_reached(
    hostile, tmp_path, ray_cluster, weights_path
):
    base, out = hostile["base"], tmp_path / "m.parquet"
    r = runner.invoke(
        app,
        ["manifest", "build", f"{base}/hostile.json", "--out", str(out), "--allow-uri", f"{base}/"],
        terminal_width=400,
    )
    assert r.exit_code == 0, r.output
    assert (
        r.output.splitlines()[-1].startswith("wrote ") and "4 image(s) left out by the URI policy" in r.output
    )
    table = pq.read_table(out)
    assert table.column("uri").to_pylist() == [f"{base}/images/astronaut.jpg", f"{base}/redirect.jpg"]
    _Site.seen.clear()
    s = run(
        RunOptions(
            manifest=str(out),
            weights=str(weights_path),
            working_size=64,
            allow_uri=[f"{base}/"],
            storage_options={"headers": {"Authorization": "Bearer s3cr3t"}},
        )
    )
    rows = {r["uri"].rsplit("/", 1)[1]: r for r in pq.read_table(f"{s.out}/results.parquet").to_pylist()}
    assert rows["astronaut.jpg"]["status"] == "done"
    assert (rows["redirect.jpg"]["status"], rows["redirect.jpg"]["error"]) == (
        "failed",
        f"refused {base}/redirect.jpg: 127.0.0.1 is a loopback address (127.0.0.1) (rule: public addresses only)",
    )
    assert _Recorder.hits == []  # the admin service never received a request
    # the operator's header went to the document's own origin, which served the image
    assert all(h.get("Authorization") == "Bearer s3cr3t" for _, h in _Site.seen), _Site.seen
    from archive_colorize.apps.report import ReportOptions, write_report

    # the report fetches the originals under the run's policy too (run.json records it)
    assert json.loads((tmp_path / "m-out" / "run.json").read_text())["untrusted_origin"] == origin(base)
    write_report(ReportOptions(out=s.out, html=str(tmp_path / "r.html")))
    page = (tmp_path / "r.html").read_text()
    assert page.count('src="data:image/jpeg;base64,') == 2 and _Recorder.hits == []
    # without --allow-uri at run time the same manifest fetches nothing on loopback
    s2 = run(
        RunOptions(manifest=str(out), out=str(tmp_path / "o2"), weights=str(weights_path), working_size=64)
    )
    assert (s2.done, s2.failed) == (0, 2)


def test_headers_stay_with_their_origin(hostile, tmp_path, ray_cluster, weights_path):
    """An image on another host that the operator allowed gets no --storage-options headers."""
    base, admin = hostile["base"], hostile["admin"]
    doc = {
        "@context": "http://iiif.io/api/presentation/3/context.json",
        "id": f"{base}/elsewhere.json",
        "type": "Manifest",
        "label": {"en": ["x"]},
        "items": [_canvas(base, 0, f"{admin}/scan.jpg")],
    }
    (hostile["tmp"] / "www" / "elsewhere.json").write_text(json.dumps(doc))
    out = tmp_path / "m.parquet"
    r = runner.invoke(
        app, ["manifest", "build", f"{base}/elsewhere.json", "--out", str(out), "--allow-uri", f"{admin}/"]
    )
    assert r.exit_code == 0, r.output
    s = run(
        RunOptions(
            manifest=str(out),
            weights=str(weights_path),
            working_size=64,
            allow_uri=[f"{admin}/"],
            storage_options={"headers": {"Authorization": "Bearer s3cr3t"}},
        )
    )
    assert s.done == 1
    assert {p for p, _ in _Recorder.hits} == {"/scan.jpg"}  # read by prepare and again by finish
    assert not any("Authorization" in h for _, h in _Recorder.hits)


def test_no_secret_reaches_any_output_file(tmp_path, ray_cluster, weights_path):
    """Userinfo, presigned-URL signatures and header credentials go in; none comes out in
    run.json, results.parquet, the progress log, the IIIF manifest, the report or an image."""
    import pyarrow as pa

    from archive_colorize.apps.report import ReportOptions, write_report

    root = tmp_path / "www"
    root.mkdir()
    for name in ("astronaut", "coffee"):
        (root / f"{name}.jpg").write_bytes(sample(f"{name}.jpg").read_bytes())
    (root / "w.safetensors").write_bytes(weights_path.read_bytes())
    site, base = _serve(partial(_Site, directory=str(root)))
    try:
        host = base.split("://", 1)[1]
        signed = "X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE&X-Amz-Signature=deadbeefcafe"
        uris = [
            f"http://archivist:hunter2@{host}/astronaut.jpg?page=1&{signed}",
            f"{base}/coffee.jpg?sig=s3cr3tsig&se=2030",
        ]
        manifest = tmp_path / "m.parquet"
        pq.write_table(pa.table({"id": ["a", "c"], "uri": uris, "style_uri": [uris[1], None]}), manifest)
        out = tmp_path / "out"
        s = run(
            RunOptions(
                manifest=str(manifest),
                out=str(out),
                weights=f"{base}/w.safetensors?token=tok123",
                working_size=64,
                storage_options={"client_kwargs": {"trust_env": False}},
            )
        )
        assert s.done == 2
        write_report(ReportOptions(out=str(out), html=str(tmp_path / "report.html")))
    finally:
        site.shutdown()
    secrets = [
        b"hunter2",
        b"deadbeefcafe",
        b"AKIAIOSFODNN7EXAMPLE",
        b"X-Amz-Signature",
        b"s3cr3tsig",
        b"tok123",
    ]
    files = [p for p in out.rglob("*") if p.is_file()] + [tmp_path / "report.html"]
    assert len(files) >= 6
    for p in files:
        data = p.read_bytes()
        if p.suffix == ".parquet":
            data = json.dumps(pq.read_table(p).to_pylist(), default=str).encode()
        for secret in secrets:
            assert secret not in data, (p.relative_to(tmp_path), secret)
    rows = {r["id"]: r for r in pq.read_table(out / "results.parquet").to_pylist()}
    assert rows["a"]["uri"] == f"{base}/astronaut.jpg?page=1"  # what is not a secret stays
    run_json = json.loads((out / "run.json").read_text())
    assert run_json["weights"]["path"] == f"{base}/w.safetensors"


def test_redact_by_key_and_by_value_at_any_depth():
    from archive_colorize.core.secrets import redact, scrub_uri

    so = {
        "headers": {"Authorization": "Bearer abc", "X-Trace": "Bearer def", "Accept": "image/*"},
        "client_kwargs": {"endpoint_url": "https://minio:pw@storage.internal:9000"},
        "config_kwargs": {"retries": [{"mode": "standard"}, "AKIAIOSFODNN7EXAMPLE"]},
        "anon": False,
    }
    assert redact(so) == {
        "headers": {"Authorization": "***", "X-Trace": "***", "Accept": "image/*"},
        "client_kwargs": {"endpoint_url": "https://storage.internal:9000"},
        "config_kwargs": {"retries": [{"mode": "standard"}, "***"]},
        "anon": False,
    }
    assert scrub_uri("s3://b/k.tif") == "s3://b/k.tif"
    assert scrub_uri("https://a.blob.core.windows.net/c/x.tif?sv=2022&se=2030&sig=abc&rscd=inline") == (
        "https://a.blob.core.windows.net/c/x.tif?rscd=inline"
    )


def test_weights_that_give_nan_fail_every_row_and_write_nothing(tmp_path, ray_cluster):
    """NaN compares false with everything: the grey check `chroma < 0.5` once let NaN weights
    write black images and call them done."""
    import pyarrow as pa
    import torch

    from archive_colorize.model.network import ColorizationModel, ModelConfig
    from archive_colorize.model.weights import save_weights

    model = ColorizationModel(ModelConfig(num_classes=100, width=0.125)).eval()
    with torch.no_grad():
        model.colorization.output.bias.fill_(float("nan"))
    save_weights(model, tmp_path / "nan.safetensors", [f"c{i}" for i in range(100)], recipe={}, data={})
    w = tmp_path / "nan.safetensors"
    manifest = tmp_path / "m.parquet"
    pq.write_table(
        pa.table({"id": ["a", "b"], "uri": [str(sample("coffee.jpg")), str(sample("rocket.jpg"))]}), manifest
    )
    s = run(RunOptions(manifest=str(manifest), out=str(tmp_path / "out"), weights=str(w), working_size=64))
    assert (s.done, s.failed) == (0, 2)
    errors = {r["error"] for r in pq.read_table(tmp_path / "out" / "results.parquet").to_pylist()}
    assert errors == {"the model produced non-finite values (NaN or Inf); nothing written"}
    assert not (tmp_path / "out" / "images").exists() or not any((tmp_path / "out" / "images").iterdir())
