"""One small hierarchy, so the CLI can turn any expected failure into one line."""


class ColorizeError(Exception):
    """Base for every error that is the user's input, not our bug."""

    hint: str = ""

    def __init__(self, message: str, hint: str = ""):
        super().__init__(message)
        if hint:
            self.hint = hint


class ManifestError(ColorizeError):
    hint = "see manifests/README.md for the manifest schema"


class WeightsError(ColorizeError):
    hint = "see `archive-colorize weights --help`"
    for_every_manifest = True  # (for `submit`: one weights file serves every manifest)


class ImageError(ColorizeError):
    """A single input image cannot be used; the pipeline records it as a failed row."""


class StorageError(ColorizeError):
    pass


class ConfigError(ColorizeError):
    hint = "see training/README.md for the config keys"


class ClusterError(ColorizeError):
    """The Ray cluster or its Jobs API refused, or could not be reached."""

    hint = "see pipelines/README.md for running on a cluster"
    for_every_manifest = True  # not one job's: `submit` stops rather than repeat it for each manifest


class OptionError(ConfigError):
    """A command-line option out of range: refused before any work."""

    hint = "see the command's --help for its options and their defaults"
    for_every_manifest = True


def last_line(e: BaseException, limit: int = 500) -> str:
    """A server's error as its last non-empty line: a Python traceback ends with what
    happened, and its first 300 characters are only where."""
    lines = [x.strip() for x in str(e).splitlines() if x.strip()]
    return (lines[-1] if lines else type(e).__name__)[:limit]


def one_line(e: BaseException, limit: int = 500) -> str:
    """An exception as one line of at most `limit` characters, for rows and messages."""
    return (" ".join(str(e).split()) or type(e).__name__)[:limit]


# what to do when the output location refuses a write
RESUME_HINT = (
    "free space or fix permissions there, then run the same command again: it resumes where it stopped"
)
