"""Manifests from the archive's own formats: IIIF Presentation 3 and 2.1 manifests and
collections served over HTTP on loopback (and on moto S3), and NARA catalog exports."""

import json
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image
from typer.testing import CliRunner

from archive_colorize.apps.cli import app
from archive_colorize.errors import ManifestError
from archive_colorize.sources.iiif import iiif_rows
from archive_colorize.run.pipeline import RunOptions, run

from .conftest import sample

runner = CliRunner()


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, *a):
        pass

    def translate_path(self, path):
        # IIIF image requests: /iiif/img/<name>/full/<size>/0/default.jpg -> the sample scan
        parts = path.split("?")[0].strip("/").split("/")
        if parts[:2] == ["iiif", "img"] and len(parts) == 7:
            return str(sample(f"{parts[2]}.jpg"))
        return super().translate_path(path)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A real HTTP server on loopback, serving the IIIF documents and images below."""
    root = tmp_path_factory.mktemp("www")
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), partial(_Quiet, directory=str(root)))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{httpd.server_address[1]}"
    (root / "images").mkdir()
    for name in ("astronaut", "rocket", "coffee"):
        (root / "images" / f"{name}.jpg").write_bytes(sample(f"{name}.jpg").read_bytes())
    docs = fixtures(base)
    for name, doc in docs.items():
        (root / name).write_text(json.dumps(doc))
    yield base
    httpd.shutdown()


def _lang(text):
    return {"en": [text]}


def v3_canvas(base, cid, label, body):
    return {
        "id": f"{base}/{cid}",
        "type": "Canvas",
        "label": _lang(label),
        "height": 300,
        "width": 451,
        "items": [
            {
                "id": f"{base}/{cid}/page",
                "type": "AnnotationPage",
                "items": [
                    {
                        "id": f"{base}/{cid}/anno",
                        "type": "Annotation",
                        "motivation": "painting",
                        "body": body,
                        "target": f"{base}/{cid}",
                    }
                ],
            }
        ],
    }


def fixtures(base):
    ctx3, ctx2 = (
        "http://iiif.io/api/presentation/3/context.json",
        "http://iiif.io/api/presentation/2/context.json",
    )
    single = {
        "@context": ctx3,
        "id": f"{base}/single.json",
        "type": "Manifest",
        "label": _lang("Chelsea, a cat, 1936"),
        "rights": "http://creativecommons.org/publicdomain/mark/1.0/",
        "requiredStatement": {"label": _lang("Attribution"), "value": _lang("National Archives, RG 83")},
        "metadata": [{"label": _lang("Photographer"), "value": _lang("Dorothea Lange")}],
        "items": [
            v3_canvas(
                base,
                "single/canvas/1",
                "Plate 1",
                {
                    "id": f"{base}/iiif/img/chelsea/full/max/0/default.jpg",
                    "type": "Image",
                    "format": "image/jpeg",
                    "service": [
                        {"id": f"{base}/iiif/img/chelsea", "type": "ImageService3", "profile": "level1"}
                    ],
                },
            )
        ],
    }
    book = {
        "@context": ctx3,
        "id": f"{base}/book.json",
        "type": "Manifest",
        "label": _lang("A photo album"),
        "items": [
            v3_canvas(base, f"book/p{i}", f"p. {i}", {"id": f"{base}/images/{n}.jpg", "type": "Image"})
            for i, n in enumerate(("astronaut", "rocket", "coffee"), 1)
        ],
    }
    nested = {
        "@context": ctx3,
        "id": f"{base}/nested.json",
        "type": "Collection",
        "label": _lang("Albums"),
        "items": [{"id": f"{base}/book.json", "type": "Manifest"}],
    }
    collection = {
        "@context": ctx3,
        "id": f"{base}/collection.json",
        "type": "Collection",
        "label": _lang("Everything"),
        "items": [
            {"id": f"{base}/single.json", "type": "Manifest"},
            {"id": f"{base}/nested.json", "type": "Collection"},
        ],
    }
    v2 = {
        "@context": ctx2,
        "@id": f"{base}/v2.json",
        "@type": "sc:Manifest",
        "label": "Two prints",
        "license": "https://rightsstatements.org/vocab/NoC-US/1.0/",
        "attribution": "Library of Congress",
        "sequences": [
            {
                "@type": "sc:Sequence",
                "canvases": [
                    {
                        "@id": f"{base}/v2/canvas/{n}",
                        "@type": "sc:Canvas",
                        "label": f"Print {n}",
                        "height": 400,
                        "width": 600,
                        "images": [
                            {
                                "@type": "oa:Annotation",
                                "motivation": "sc:painting",
                                "on": f"{base}/v2/canvas/{n}",
                                "resource": {
                                    "@id": f"{base}/iiif/img/{n}/full/full/0/default.jpg",
                                    "@type": "dctypes:Image",
                                    "service": {
                                        "@context": "http://iiif.io/api/image/2/context.json",
                                        "@id": f"{base}/iiif/img/{n}",
                                        "profile": "http://iiif.io/api/image/2/level1.json",
                                    },
                                },
                            }
                        ],
                    }
                    for n in ("rocket", "coffee")
                ],
            }
        ],
    }
    broken = json.loads(json.dumps(book).replace(f'"id": "{base}/book/p2"', '"label_only": "x"', 1))
    broken["id"] = f"{base}/broken.json"
    return {
        "single.json": single,
        "book.json": book,
        "nested.json": nested,
        "collection.json": collection,
        "v2.json": v2,
        "broken.json": broken,
    }


def build(*args):
    """`manifest build`; a document on the loopback test server may name its own images
    only because the operator allows that server (the URI policy refuses loopback)."""
    src = str(args[0])
    allow = ["--allow-uri", src.rsplit("/", 1)[0] + "/"] if src.startswith("http://127.0.0.1:") else []
    r = runner.invoke(app, ["manifest", "build", *map(str, args), *allow])
    return r.exit_code, r.output.strip()


def test_single_image_manifest(server, tmp_path):
    out = tmp_path / "m.parquet"
    code, line = build(f"{server}/single.json", "--out", out)
    assert code == 0, line
    [row] = pq.read_table(out).to_pylist()
    assert row["uri"] == f"{server}/iiif/img/chelsea/full/max/0/default.jpg"
    assert row["id"] == "single_canvas_1" and row["title"] == "Plate 1"
    assert (row["iiif_manifest"], row["iiif_canvas"]) == (
        f"{server}/single.json",
        f"{server}/single/canvas/1",
    )
    assert row["rights"] == "http://creativecommons.org/publicdomain/mark/1.0/"
    assert row["required_statement"] == "National Archives, RG 83"
    assert json.loads(row["metadata"]) == [{"label": "Photographer", "value": "Dorothea Lange"}]
    code, _ = build(f"{server}/single.json", "--out", out, "--max-size", "1024")
    assert pq.read_table(out).column("uri").to_pylist() == [
        f"{server}/iiif/img/chelsea/full/!1024,1024/0/default.jpg"
    ]


def test_book_collection_and_v21(server):
    book = iiif_rows(f"{server}/book.json", allow=(f"{server}/",))
    assert [r["id"] for r in book] == ["book_p1", "book_p2", "book_p3"]
    assert [r["title"] for r in book] == ["p. 1", "p. 2", "p. 3"]
    assert book[1]["uri"] == f"{server}/images/rocket.jpg"  # no image service: the body's own id
    everything = iiif_rows(
        f"{server}/collection.json", allow=(f"{server}/",)
    )  # a collection holding a manifest and a collection
    assert sorted(r["id"] for r in everything) == ["book_p1", "book_p2", "book_p3", "single_canvas_1"]
    v2 = iiif_rows(f"{server}/v2.json", allow=(f"{server}/",))
    assert [r["uri"] for r in v2] == [
        f"{server}/iiif/img/{n}/full/full/0/default.jpg" for n in ("rocket", "coffee")
    ]  # an Image API 2 service: `full`, which 2.0 and 2.1 both know (2.0 has no `max`)
    assert v2[0]["title"] == "Print rocket" and v2[0]["rights"].startswith("https://rightsstatements.org/")
    assert v2[0]["required_statement"] == "Library of Congress"


@pytest.mark.parametrize(
    "service, whole, bounded",
    [
        # Gallica's and Biblissima's: Image API 1.1, by its context and profile
        ({"@context": "http://library.stanford.edu/iiif/image-api/1.1/context.json", "@id": "https://img.example/ark:/1/f1",
          "profile": "http://library.stanford.edu/iiif/image-api/1.1/compliance.html#level2"},
         "full/full/0/native.jpg", "full/!4000,4000/0/native.jpg"),
        ({"@context": "http://iiif.io/api/image/1/context.json", "@id": "https://img.example/ark:/1/f1",
          "profile": "http://iiif.io/api/image/1/level1.json"}, "full/full/0/native.jpg", "full/!4000,4000/0/native.jpg"),
        ({"@context": "http://iiif.io/api/image/2/context.json", "@id": "https://img.example/ark:/1/f1",
          "profile": "http://iiif.io/api/image/2/level2.json"}, "full/full/0/default.jpg", "full/!4000,4000/0/default.jpg"),
        ({"id": "https://img.example/ark:/1/f1", "type": "ImageService2", "profile": "level2"},
         "full/full/0/default.jpg", "full/!4000,4000/0/default.jpg"),
        ({"id": "https://img.example/ark:/1/f1", "type": "ImageService3", "profile": "level1"},
         "full/max/0/default.jpg", "full/!4000,4000/0/default.jpg"),
    ],
)  # fmt: skip
def test_the_image_request_follows_the_services_image_api_version(service, whole, bounded):
    from archive_colorize.sources.iiif import image_url

    body = {"id": "https://img.example/ark:/1/f1/full/full/0/native.jpg", "service": [service]}
    assert image_url(body, None) == f"https://img.example/ark:/1/f1/{whole}"
    assert image_url(body, 4000) == f"https://img.example/ark:/1/f1/{bounded}"


def test_a_gallica_style_v2_manifest_with_two_sequences_and_repeated_images(tmp_path):
    svc = {"@context": "http://library.stanford.edu/iiif/image-api/1.1/context.json",
           "profile": "http://library.stanford.edu/iiif/image-api/1.1/compliance.html#level2"}  # fmt: skip

    def canvas(n, images):
        return {"@id": f"https://gallica.example/iiif/ark:/12148/btv1b1/canvas/f{n}", "@type": "sc:Canvas",
                "label": f"f{n}", "height": 10, "width": 10,
                "images": [{"@type": "oa:Annotation", "motivation": "sc:painting",
                            "resource": {"@id": f"https://gallica.example/iiif/ark:/12148/btv1b1/f{i}/full/full/0/native.jpg",
                                         "@type": "dctypes:Image",
                                         "service": {**svc, "@id": f"https://gallica.example/iiif/ark:/12148/btv1b1/f{i}"}},
                            "on": f"https://gallica.example/iiif/ark:/12148/btv1b1/canvas/f{n}"} for i in images]}  # fmt: skip

    canvases = [canvas(1, [1, 1]), canvas(2, [2])]  # canvas f1 paints image f1 twice
    doc = {"@context": "http://iiif.io/api/presentation/2/context.json", "@type": "sc:Manifest",
           "@id": "https://gallica.example/iiif/ark:/12148/btv1b1/manifest.json", "label": "Album",
           "sequences": [{"@type": "sc:Sequence", "canvases": canvases},
                         {"@type": "sc:Sequence", "canvases": canvases}]}  # fmt: skip
    path = tmp_path / "gallica.json"
    path.write_text(json.dumps(doc))
    rows = iiif_rows(str(path))
    assert [(r["id"], r["uri"]) for r in rows] == [
        (
            "iiif_ark_12148_btv1b1_canvas_f1",
            "https://gallica.example/iiif/ark:/12148/btv1b1/f1/full/full/0/native.jpg",
        ),
        (
            "iiif_ark_12148_btv1b1_canvas_f2",
            "https://gallica.example/iiif/ark:/12148/btv1b1/f2/full/full/0/native.jpg",
        ),
    ]


def test_an_unreachable_collection_member_is_skipped_and_reported(server, tmp_path):
    coll = {"@context": "http://iiif.io/api/presentation/3/context.json", "id": f"{server}/c.json",
            "type": "Collection", "label": _lang("c"),
            "items": [{"id": f"{server}/gone.json", "type": "Manifest"},
                      {"id": f"{server}/book.json", "type": "Manifest"}]}  # fmt: skip
    path = tmp_path / "c.json"
    path.write_text(json.dumps(coll))
    out = tmp_path / "m.parquet"
    r = runner.invoke(app, ["manifest", "build", str(path), "--out", str(out), "--allow-uri", f"{server}/"])
    assert r.exit_code == 0, r.output
    assert pq.read_table(out).column("id").to_pylist() == ["book_p1", "book_p2", "book_p3"]
    lines = r.output.splitlines()
    assert (
        lines[0]
        == f"skipped: {path} $.items[0]: {server}/gone.json: IIIF document not found: {server}/gone.json"
    )
    assert lines[-1].endswith("; 1 collection member(s) could not be read and were skipped"), lines


def test_malformed_manifest_names_the_json_path(server, tmp_path):
    with pytest.raises(
        ManifestError, match=r"^IIIF http://127\.0\.0\.1:\d+/broken\.json: \$\.items\[1\]\.id: missing$"
    ):
        iiif_rows(f"{server}/broken.json", allow=(f"{server}/",))
    code, line = build(f"{server}/nothing-here.json", "--out", tmp_path / "m.parquet")
    assert code == 1 and line.startswith("Error: ")


def test_run_on_a_iiif_collection(server, ray_cluster, weights_path, tmp_path):
    out = tmp_path / "m.parquet"
    assert build(f"{server}/collection.json", "--out", out)[0] == 0
    s = run(
        RunOptions(manifest=str(out), weights=str(weights_path), working_size=64, allow_uri=[f"{server}/"])
    )
    assert (s.done, s.failed) == (4, 0)
    rows = {r["id"]: r for r in pq.read_table(tmp_path / "m-out" / "results.parquet").to_pylist()}
    assert rows["single_canvas_1"]["iiif_canvas"] == f"{server}/single/canvas/1"
    assert rows["book_p2"]["width"] == 640  # rocket.jpg, fetched over HTTP
    # OUT/iiif/manifest.json: a canvas per done row, each offering the colorized image and the original
    from iiif_prezi3 import Manifest

    doc = json.loads((tmp_path / "m-out" / "iiif" / "manifest.json").read_text())
    Manifest(**doc)  # valid IIIF Presentation 3
    assert (
        doc["id"] == (tmp_path / "m-out").resolve().as_uri() + "/iiif/manifest.json"
        and len(doc["items"]) == 4
    )
    by_label = {c["label"]["none"][0]: c for c in doc["items"]}
    canvas = by_label["Plate 1"]
    body = canvas["items"][0]["items"][0]["body"]
    assert body["type"] == "Choice" and [b["label"]["en"][0] for b in body["items"]] == [
        "Colorized by a trained model (archive-colorize)",
        "Original scan",
    ]
    assert body["items"][0]["id"].endswith("/m-out/images/single_canvas_1.png")
    assert body["items"][1]["id"] == f"{server}/iiif/img/chelsea/full/max/0/default.jpg"
    assert canvas["partOf"] == [{"id": f"{server}/single.json", "type": "Manifest"}]
    assert canvas["seeAlso"][0]["id"] == f"{server}/single/canvas/1"
    assert (canvas["width"], canvas["height"]) == (451, 300)
    s2 = run(
        RunOptions(
            manifest=str(out),
            weights=str(weights_path),
            working_size=64,
            iiif_base="https://archive.example/run1",
        )
    )
    assert s2.processed_now == 0  # nothing to redo; the IIIF manifest is rewritten with the published ids
    doc = json.loads((tmp_path / "m-out" / "iiif" / "manifest.json").read_text())
    Manifest(**doc)
    assert doc["id"] == "https://archive.example/run1/iiif/manifest.json"
    assert doc["items"][0]["items"][0]["items"][0]["body"]["items"][0]["id"].startswith(
        "https://archive.example/run1/images/"
    )


def test_the_run_manifest_keeps_canvas_ids_across_a_resume_in_manifest_order(
    ray_cluster, weights_path, tmp_path
):
    from iiif_prezi3 import Manifest

    names = ["chelsea", "coffee", "rocket", "astronaut"]
    ids = ["p10", "p2", "p1", "p9"]  # manifest order, which is not the ids' text order
    for i, n in zip(ids, names):
        (tmp_path / f"{i}.jpg").write_bytes(sample(f"{n}.jpg").read_bytes())
    manifest = tmp_path / "album-1936.parquet"
    pq.write_table(pa.table({
        "id": ids, "uri": [f"{i}.jpg" for i in ids], "title": [f"Plate {i}" for i in ids],
        "creator": ["Dorothea Lange"] * 4, "rights": ["http://rightsstatements.org/vocab/NoC-US/1.0/"] * 4,
        "required_statement": ["Library of Congress, Prints & Photographs Division"] * 4,
    }), manifest)  # fmt: skip
    opts = dict(manifest=str(manifest), weights=str(weights_path), working_size=64)
    doc_path = tmp_path / "album-1936-out" / "iiif" / "manifest.json"
    assert run(RunOptions(**opts, limit=2)).done == 2
    first = json.loads(doc_path.read_text())
    assert run(RunOptions(**opts, iiif_base="https://archive.example/album")).done == 4
    doc = json.loads(doc_path.read_text())
    Manifest(**doc)
    base = "https://archive.example/album/iiif/canvas/"
    assert [c["id"] for c in doc["items"]] == [base + i for i in ids]  # manifest order, ids from the rows
    assert [c["id"].rsplit("/", 1)[1] for c in first["items"]] == ["p10", "p2"]  # the same ids before
    assert doc["label"] == {"en": ["album-1936, colorized"]}
    c = doc["items"][0]
    assert c["rights"] == "http://rightsstatements.org/vocab/NoC-US/1.0/"
    assert c["requiredStatement"]["value"]["en"][0].startswith(
        "Library of Congress, Prints & Photographs Division"
    )
    labels = {m["label"]["en"][0]: m["value"] for m in c["metadata"]}
    assert labels["Creator"] == {"none": ["Dorothea Lange"]}
    text = json.dumps(c["metadata"])
    assert "sha256" not in text and "Scene" not in text  # no hashes, no scene guesses in public metadata
    colour, original = c["items"][0]["items"][0]["body"]["items"]
    assert colour["id"] == "https://archive.example/album/images/p10.png" and "rendering" not in c
    # the local originals are published as web copies under OUT, with their sizes
    assert original == {
        "id": "https://archive.example/album/originals/p10.jpg", "type": "Image", "format": "image/jpeg",
        "width": 451, "height": 300, "label": {"en": ["Original scan"]},
    }  # fmt: skip
    w, h = Image.open(tmp_path / "album-1936-out" / "originals" / "p10.jpg").size
    assert (w, h) == (451, 300)
    assert c["thumbnail"] == [{
        "id": "https://archive.example/album/thumbs/p10.jpg", "type": "Image", "format": "image/jpeg",
        "width": 256, "height": 170,
    }]  # fmt: skip
    assert Image.open(tmp_path / "album-1936-out" / "thumbs" / "p10.jpg").size == (256, 170)
    assert doc["thumbnail"] == c["thumbnail"]
    assert doc["seeAlso"][0]["id"] == "https://archive.example/album/run.json"
    # a run's manifest read back by manifest build gives the originals, not the colour again
    again = iiif_rows(str(doc_path))
    assert [r["uri"] for r in again] == [f"https://archive.example/album/originals/{i}.jpg" for i in ids]


def test_iiif_with_images_on_s3(s3, s3_server, ray_cluster, weights_path, tmp_path):
    s3.mkdir("iiif-s3")
    s3.pipe("iiif-s3/scans/rocket.jpg", sample("rocket.jpg").read_bytes())
    doc = {
        "@context": "http://iiif.io/api/presentation/3/context.json",
        "id": "https://archive.example/m/1",
        "type": "Manifest",
        "label": _lang("On S3"),
        "items": [
            v3_canvas(
                "https://archive.example",
                "m/1/c1",
                "c1",
                {"id": "s3://iiif-s3/scans/rocket.jpg", "type": "Image"},
            )
        ],
    }
    s3.pipe("iiif-s3/manifest.json", json.dumps(doc).encode())
    out = tmp_path / "m.parquet"
    r = runner.invoke(
        app,
        [
            "manifest",
            "build",
            "s3://iiif-s3/manifest.json",
            "--out",
            str(out),
            "--storage-options",
            json.dumps(s3_server),
        ],
    )
    assert r.exit_code == 0, r.output
    assert pq.read_table(out).column("uri").to_pylist() == ["s3://iiif-s3/scans/rocket.jpg"]
    s = run(
        RunOptions(manifest=str(out), weights=str(weights_path), working_size=64, storage_options=s3_server)
    )
    assert (s.done, s.failed) == (1, 0)


# Records written by this project in the shapes of NARA's Catalog API v2 (field names and
# nesting as its bulk-download scripts read them): ancestors with levels, objectIds, a
# presidential library's record (a collection, no record group), objects that are not images.
NARA = [
    # a description whose use is unrestricted: two image objects and a PDF
    {
        "naId": 535551,
        "title": "Destitute pea pickers in California",
        "levelOfDescription": "item",
        "ancestors": [
            {"levelOfDescription": "recordGroup", "naId": 407, "recordGroupNumber": 83,
             "title": "Records of the Bureau of Agricultural Economics"},
            {"levelOfDescription": "series", "naId": 521600, "title": "Photographs of the Farm Security Administration"},
        ],
        "accessRestriction": {"status": "Unrestricted"},
        "useRestriction": {"status": "Unrestricted"},
        "digitalObjects": [
            {"objectId": "55321001", "objectType": "Image (JPG)", "objectFilename": "535551_a.jpg",
             "objectUrl": "https://nara.example/535551_a.jpg"},
            {"objectId": "55321002", "objectType": "Image (TIFF)", "objectFilename": "535551_b.tif",
             "objectUrl": "https://nara.example/535551_b.tif"},
            {"objectId": "55321003", "objectType": "Portable Document File (PDF)", "objectFilename": "535551.pdf",
             "objectUrl": "https://nara.example/535551.pdf"},
        ],
    },
    # restricted use: left out and counted
    {
        "naId": 700001,
        "title": "A restricted photograph",
        "recordGroupNumber": 208,
        "accessRestriction": {"status": "Unrestricted"},
        "useRestriction": {"status": "Restricted - Possibly"},
        "digitalObjects": [{"objectId": "9001", "objectType": "Image (JPG)", "objectUrl": "https://nara.example/700001.jpg"}],
    },
    # a presidential library's: a collection, no record group
    {
        "naId": 6802710,
        "title": "President Roosevelt at his desk",
        "ancestors": [
            {"levelOfDescription": "collection", "naId": 566, "collectionIdentifier": "FDR-FDRPHOTOS",
             "title": "Franklin D. Roosevelt Library Photographs"},
            {"levelOfDescription": "series", "naId": 195999, "title": "Photographs, 1882 - 1962"},
        ],
        "accessRestriction": {"status": "Unrestricted"},
        "useRestriction": {"status": "Unrestricted"},
        "digitalObjects": [{"objectId": "4711", "objectType": "Image (JPG)", "objectUrl": "https://nara.example/6802710.jpg"}],
    },
    # no digital objects at all
    {"naId": 700002, "title": "Described, not digitized", "useRestriction": {"status": "Unrestricted"}},
]  # fmt: skip

NARA_ROWS = [
    ("535551-55321001", "https://nara.example/535551_a.jpg", 83, None, 521600),
    ("535551-55321002", "https://nara.example/535551_b.tif", 83, None, 521600),
    ("6802710-4711", "https://nara.example/6802710.jpg", None, "FDR-FDRPHOTOS", 195999),
]


def _hit(record: dict) -> dict:
    return {"_index": "descriptions", "_id": str(record["naId"]), "_score": 1.0,
            "_source": {"metadata": {"uuid": f"u-{record['naId']}"}, "record": record}}  # fmt: skip


def test_nara_reads_every_shape_nara_publishes_to_the_same_rows(tmp_path):
    response = {"body": {"hits": {"total": {"value": len(NARA)}, "hits": [_hit(r) for r in NARA]}}}
    shapes = {
        "response.json": json.dumps(response, indent=2),  # an API v2 page as saved
        "hits.jsonl": "".join(json.dumps(_hit(r)) + "\n" for r in NARA),  # its hits, one per line
        "export.jsonl": "".join(json.dumps({"record": r}) + "\n" for r in NARA),  # the S3 bulk export
        "records.jsonl": "".join(json.dumps(r) + "\n" for r in NARA),
        "array.json": json.dumps(NARA, indent=1),  # a JSON array of records
    }
    for name, text in shapes.items():
        export, out = tmp_path / name, tmp_path / f"{name}.parquet"
        export.write_text(text)
        code, line = build("--nara", export, "--out", out)
        assert code == 0, (name, line)
        assert line.endswith(
            "; 1 restricted image(s) left out (--include-restricted keeps them)"
            "; 1 object(s) that are not images skipped (1 Portable Document File (PDF))"
        ), (name, line)
        table = pq.read_table(out)
        got = [
            (r["id"], r["uri"], r["record_group"], r["collection"], r["series_naId"])
            for r in table.to_pylist()
        ]
        assert got == NARA_ROWS, name
        assert table.schema.field("record_group").type == pa.int64()
        assert table.column("object_type").to_pylist() == ["Image (JPG)", "Image (TIFF)", "Image (JPG)"]
        assert table.column("object_id").to_pylist() == ["55321001", "55321002", "4711"]
    # one record, pretty-printed
    one = tmp_path / "one.json"
    one.write_text(json.dumps(NARA[2], indent=4))
    code, line = build("--nara", one, "--out", tmp_path / "one.parquet")
    assert code == 0, line
    table = pq.read_table(tmp_path / "one.parquet")
    assert table.column("id").to_pylist() == ["6802710-4711"]
    # every record a presidential library's: record_group is still an integer column
    assert (
        table.schema.field("record_group").type == pa.int64() and table.column("record_group").null_count == 1
    )


def test_nara_export(tmp_path):
    export = tmp_path / "nara.jsonl"
    export.write_text("".join(json.dumps(d) + "\n" for d in NARA))
    out = tmp_path / "m.parquet"
    rows = pq.read_table(out).to_pylist() if build("--nara", export, "--out", out)[0] == 0 else []
    assert rows[0]["naId"] == 535551 and rows[0]["use_restriction"] == "Unrestricted"
    assert rows[0]["series_title"] == "Photographs of the Farm Security Administration"
    code, _ = build("--nara", export, "--out", out, "--include-restricted")
    assert pq.read_table(out).column("id").to_pylist() == [
        "535551-55321001", "535551-55321002", "700001-9001", "6802710-4711"
    ]  # fmt: skip
    # an export without objectIds: the position among the record's images
    legacy = {
        **NARA[0],
        "digitalObjects": [
            {k: v for k, v in o.items() if k != "objectId"} for o in NARA[0]["digitalObjects"]
        ],
    }
    export.write_text(json.dumps(legacy) + "\n")
    assert build("--nara", export, "--out", out)[0] == 0
    assert pq.read_table(out).column("id").to_pylist() == ["535551-0", "535551-1"]
    export.write_text('{"title": "no id"}\n')
    code, line = build("--nara", export, "--out", out)
    assert code == 1 and line.startswith(
        f"Error: NARA export {export} line 1: not a catalog description (no naId)"
    )
    export.write_text(
        json.dumps(
            {"body": {"hits": {"hits": [_hit(NARA[0]), {"_source": {"record": {"title": "x"}}}]}}}, indent=2
        )
    )
    code, line = build("--nara", export, "--out", out)
    assert code == 1 and line.startswith(
        f"Error: NARA export {export} document hit 2: not a catalog description (no naId)"
    )
    export.write_text('{"naId": 1,\n "title": ')
    code, line = build("--nara", export, "--out", out)
    assert code == 1 and line.startswith(
        f"Error: NARA export {export}: not JSON (Expecting value at line 2)"
    ), line


def test_a_nara_export_with_odd_values_is_refused_or_read_never_a_traceback(tmp_path):
    lines = {
        "bad_id": json.dumps({"naId": "12abc", "digitalObjects": []}),
        "deep": "[" * 100_000 + "]" * 100_000,
    }
    for name, line in lines.items():
        p = tmp_path / f"{name}.jsonl"
        p.write_text(line + "\n")
        code, out = build("--nara", p, "--out", tmp_path / "m.parquet")
        assert code == 1, out
        assert (
            out.splitlines()[0]
            == {
                "bad_id": f"Error: NARA export {p} line 1: naId must be an integer, not '12abc'",
                "deep": f"Error: NARA export {p} line 1: JSON nested too deeply",
            }[name]
        )
    # mixed types across records: a title as a list, a record group as text, a filename as a number
    records = [
        {"naId": 1, "title": ["Migrant", "Mother"], "useRestriction": {"status": "Unrestricted"},
         "ancestors": [{"recordGroupNumber": "83"}],
         "digitalObjects": [{"objectUrl": "https://s3.amazonaws.com/NARAprodstorage/a.jpg", "objectType": "Image (JPG)",
                             "objectFilename": 17}]},
        {"naId": "2", "title": "Plain", "useRestriction": {"status": "Unrestricted"},
         "ancestors": [{"recordGroupNumber": 83}],
         "digitalObjects": [{"objectUrl": "https://s3.amazonaws.com/NARAprodstorage/b.jpg", "objectType": "Image (JPG)"}]},
    ]  # fmt: skip
    p = tmp_path / "mixed.jsonl"
    p.write_text("\n".join(json.dumps(r) for r in records) + "\n")
    code, out = build("--nara", p, "--out", tmp_path / "m.parquet")
    assert code == 0, out
    rows = pq.read_table(tmp_path / "m.parquet").to_pylist()
    assert [(r["naId"], r["title"], r["record_group"], r["object_filename"]) for r in rows] == [
        (1, "Migrant; Mother", 83, "17"),
        (2, "Plain", 83, None),
    ]
