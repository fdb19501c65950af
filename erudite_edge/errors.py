"""Errors a user can act on. Each carries one clear line; the CLI prints it and exits non-zero."""


class EruditeError(Exception):
    """Base class: the message is the one line shown to the user."""

    exit_code = 1


class UsageError(EruditeError):
    """A wrong argument or a missing file named on the command line."""

    exit_code = 2


class BadImageError(EruditeError):
    """An image that cannot be decoded (corrupt, empty, not an image). `kind`: which per-item error it is
    (one word, the same for every instance of a class; subclasses name their own)."""

    kind = "bad_image"


class ImageTooLargeError(BadImageError):
    """An image with more pixels than the run allows (`--max-pixels`), found from its header before decoding."""

    kind = "too_large"


class BundleError(EruditeError):
    """A bundle that is missing, malformed, or does not match its models."""

    exit_code = 2


class SourceError(EruditeError):
    """A video or image source that cannot be opened."""

    exit_code = 2


class BackendUnavailable(EruditeError):
    """An inference backend whose library is not importable here."""

    exit_code = 2


class OutputError(EruditeError):
    """An output that cannot be written (disk full, read-only, I/O error); what was written stays."""

    exit_code = 2
