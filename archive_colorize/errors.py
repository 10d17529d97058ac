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


class ImageError(ColorizeError):
    """A single input image cannot be used; the pipeline records it as a failed row."""


class StorageError(ColorizeError):
    pass


class ConfigError(ColorizeError):
    hint = "see training/README.md for the config keys"


class OptionError(ConfigError):
    """A command-line option out of range: refused before any work."""

    hint = "see the command's --help for its options and their defaults"


def one_line(e: BaseException, limit: int = 500) -> str:
    """An exception as one line of at most `limit` characters, for rows and messages."""
    return (" ".join(str(e).split()) or type(e).__name__)[:limit]


# what to do when the output location refuses a write
RESUME_HINT = (
    "free space or fix permissions there, then run the same command again: it resumes where it stopped"
)
