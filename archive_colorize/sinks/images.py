"""OUT/images/: one file per colorized scan, named from its id (or output_name), written
atomically so that a crash never leaves half a file under a final name."""

from __future__ import annotations

from archive_colorize.core.formats import FORMATS
from archive_colorize.core.storage import atomic_write_bytes, resolve

FOLDER = "images"


class ImageFolder:
    def __init__(self, out_url: str, storage_options: dict | None = None):
        self.url = out_url.rstrip("/")  # the URL: results keep the protocol (s3://...)
        self.fs, self.root = resolve(self.url, storage_options)

    @staticmethod
    def file_name(safe_stem: str, fmt: str) -> str:
        return f"{safe_stem}.{FORMATS[fmt]}"

    def write(self, name: str, blob: bytes, folder: str = FOLDER) -> str:
        """Write one image (into OUT/images, or a web copy's folder: imaging/web.py); -> its
        URI. OSError or StorageError: the location refused it."""
        atomic_write_bytes(f"{self.root}/{folder}/{name}", blob, fs=self.fs)
        return f"{self.url}/{folder}/{name}"

    def listing(self, folder: str) -> set[str]:
        """The file names in one of OUT's folders (none if it does not exist)."""
        path = f"{self.root}/{folder}"
        self.fs.invalidate_cache(path)  # the workers wrote there, not this process (s3fs caches listings)
        try:
            return {p.rsplit("/", 1)[-1] for p in self.fs.ls(path, detail=False)}
        except (FileNotFoundError, NotADirectoryError):
            return set()
