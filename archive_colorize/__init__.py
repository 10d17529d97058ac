"""archive-colorize: Iizuka et al. (SIGGRAPH 2016) colorization at archive scale.

The public API, loaded on first use (so that `import archive_colorize.core...` stays free
of torch and Ray):

    from archive_colorize import Engine, load_weights, decode_image, recombine
    engine = Engine(load_weights())                       # the shipped weights, calibrated
    d = decode_image(open("scan.tif", "rb").read())
    rgb = recombine(d.lightness, scale_chroma(engine.predict(d.lightness).ab, engine.chroma_gain))

The archive job is `archive_colorize.run.pipeline.run(RunOptions(manifest=...))`.
"""

__version__ = "0.1.0"

_API = {
    "ColorizationModel": "archive_colorize.model.network",
    "ModelConfig": "archive_colorize.model.network",
    "Weights": "archive_colorize.model.weights",
    "load_weights": "archive_colorize.model.weights",
    "Engine": "archive_colorize.model.engine",
    "scale_chroma": "archive_colorize.model.engine",
    "decode_image": "archive_colorize.imaging.images",
    "encode_image": "archive_colorize.imaging.images",
    "working_copy": "archive_colorize.imaging.images",
    "recombine": "archive_colorize.imaging.render",
    "render": "archive_colorize.imaging.render",
    "Provenance": "archive_colorize.imaging.provenance",
    "load_manifest": "archive_colorize.sources.manifest",
    "RunOptions": "archive_colorize.run.options",
    "evaluate": "archive_colorize.train.evaluate",
    "load_config": "archive_colorize.train.config",
    "ColorizeError": "archive_colorize.errors",
}
__all__ = ["__version__", *_API]


def __getattr__(name: str):
    if name in _API:
        import importlib

        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'archive_colorize' has no attribute {name!r}")
