"""Serve a run's OUT folder as a IIIF viewer needs it, for a local check before publishing:

    python docs/serve_out.py OUT --port 8000
    archive-colorize run m.parquet --out OUT --iiif-base http://localhost:8000   # ids under it

Every answer carries `Access-Control-Allow-Origin: *` (a viewer on another origin, such as
Mirador on a web page, is refused without it: "Failed to fetch"), and the manifest is
served as `application/ld+json`. A real deployment does the same in its web server or
bucket (docs/publishing.md).
"""

import argparse
import functools
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer


class Handler(SimpleHTTPRequestHandler):
    extensions_map = {
        **SimpleHTTPRequestHandler.extensions_map,
        ".json": "application/ld+json",
        ".webp": "image/webp",
        ".tif": "image/tiff",
    }

    def end_headers(self):
        self.send_header("Access-Control-Allow-Origin", "*")
        super().end_headers()

    def log_message(self, *args):
        pass


def serve(folder: str, port: int, host: str = "127.0.0.1") -> ThreadingHTTPServer:
    return ThreadingHTTPServer((host, port), functools.partial(Handler, directory=folder))


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out")
    ap.add_argument("--port", type=int, default=8000)
    a = ap.parse_args()
    print(f"serving {a.out} at http://127.0.0.1:{a.port}/")
    serve(a.out, a.port).serve_forever()
