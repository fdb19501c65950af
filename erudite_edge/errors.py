"""Errors a user can act on. Each carries one clear line; the CLI prints it and exits non-zero."""


# what would break a message into lines (a user's text in it: a path, a --roi, a URI): shown escaped
_LINE_BREAKS = {c: repr(chr(c))[1:-1] for c in [*range(0x20), 0x7F, 0x85, 0x2028, 0x2029] if c != 0x09}


class EruditeError(Exception):
    """Base class: the message is the one line shown to the user (line breaks and other control characters
    in it, from a user's text, are written as escapes: `\\n`)."""

    exit_code = 1

    def __init__(self, *args: object) -> None:
        if len(args) == 1 and isinstance(args[0], str):
            args = (args[0].translate(_LINE_BREAKS),)
        super().__init__(*args)


class UsageError(EruditeError):
    """A wrong argument or a missing file named on the command line."""

    exit_code = 2


class BadImageError(EruditeError):
    """An image that cannot be decoded (corrupt, truncated, empty, not an image).

    `kind` names the problem in one word for programs (the API's Prediction.error.kind); each subclass sets
    its own. The kinds: "bad_image" (the bytes do not decode), "unreadable" (the file cannot be read:
    missing, a folder, no permission), "too_large" (more
    pixels than --max-pixels / RunOptions.max_pixels allows)."""

    kind = "bad_image"


class ImageTooLargeError(BadImageError):
    """An image with more pixels than the run allows (`--max-pixels`), found from its header before decoding."""

    kind = "too_large"


class UnreadableImageError(BadImageError):
    """An image file that cannot be read at all (missing, a folder, no permission)."""

    kind = "unreadable"


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


class NothingClassifiedError(EruditeError):
    """A run that ended (not stopped) without one result: every file undecodable, every box empty, ..."""
