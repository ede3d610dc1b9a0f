"""The exceptions the binding raises.

Every failure of a libfree call raises a FreeError subclass that carries the status
(`status`), the library's detailed message (`message`) and the C function (`function`).
The subclasses also derive from the built-in exception a Python user expects, so that
`except ValueError` / `except OSError` / `except MemoryError` catch them:

    InvalidArgument (ValueError)  FREE_ERR_INVALID_ARG
    OutOfMemory (MemoryError)     FREE_ERR_NOMEM
    LibraryIOError (OSError)      FREE_ERR_IO
    FormatError (ValueError)      FREE_ERR_FORMAT: a malformed or foreign file or state
    UnsupportedError              FREE_ERR_UNSUPPORTED
    ModelError                    FREE_ERR_MODEL
    ContextFull                   FREE_ERR_CONTEXT_FULL
    TokenError (ValueError)       FREE_ERR_TOKEN
    BufferTooSmall                FREE_ERR_BUFFER_TOO_SMALL
    StateError                    FREE_ERR_STATE
    Aborted                       FREE_ERR_ABORTED
    InternalError                 FREE_ERR_INTERNAL
    NumericError (ArithmeticError) FREE_ERR_NUMERIC: NaN or infinity in the weights or logits

Arguments the binding rejects before calling C raise the built-in exceptions directly:
FileNotFoundError for a model file that does not exist, TypeError for a value of the wrong
type (a prompt that is not str or bytes), ValueError for a value out of range.
"""

from ._ffi import Status


class FreeError(Exception):
    """A libfree call failed. `status` is a Status (or the raw int for an unknown value),
    `message` the library's detailed message, `function` the C function that failed."""

    def __init__(self, status, message="", function=None):
        try:
            status = Status(status)
        except ValueError:
            pass
        self.status = status
        self.message = message
        self.function = function
        Exception.__init__(self, status, message)

    def __str__(self):
        from . import _ffi
        desc = getattr(self.status, "name", str(self.status))
        if _ffi._lib is not None:
            desc = _ffi._lib.free_strerror(int(self.status)).decode("utf-8", "replace")
        # The library's messages often name the function already ("free_step: NULL
        # argument"): it is added only when they do not.
        where = ""
        if self.function and self.function not in self.message:
            where = f"{self.function}: "
        if self.message:
            return f"{where}{self.message} ({desc})"
        return f"{where}{desc}"

    # OSError's own __str__ / __reduce__ would win for the OSError subclass otherwise.
    def __reduce__(self):
        return (_make_error, (int(self.status), self.message, self.function))


class InvalidArgument(FreeError, ValueError):
    """FREE_ERR_INVALID_ARG: an argument the library refused."""


class OutOfMemory(FreeError, MemoryError):
    """FREE_ERR_NOMEM."""


class LibraryIOError(FreeError, OSError):
    """FREE_ERR_IO: a file could not be opened, read or mapped."""

    def __init__(self, status, message="", function=None):
        FreeError.__init__(self, status, message, function)

    __str__ = FreeError.__str__


class FormatError(FreeError, ValueError):
    """FREE_ERR_FORMAT: a malformed, truncated or foreign file (or saved state)."""


class UnsupportedError(FreeError):
    """FREE_ERR_UNSUPPORTED: valid but not supported by this library."""


class ModelError(FreeError):
    """FREE_ERR_MODEL: a tensor is missing or has the wrong shape."""


class ContextFull(FreeError):
    """FREE_ERR_CONTEXT_FULL: the context has no room for more tokens."""


class TokenError(FreeError, ValueError):
    """FREE_ERR_TOKEN: a token id outside the vocabulary."""


class BufferTooSmall(FreeError):
    """FREE_ERR_BUFFER_TOO_SMALL (the binding sizes its buffers; seen only on a bug)."""


class StateError(FreeError):
    """FREE_ERR_STATE: the call is not valid in the context's state."""


class Aborted(FreeError):
    """FREE_ERR_ABORTED: the abort callback asked to stop."""


class InternalError(FreeError):
    """FREE_ERR_INTERNAL: a bug in libfree."""


class NumericError(FreeError, ArithmeticError):
    """FREE_ERR_NUMERIC: NaN or infinity in the model's weights or in the logits."""


_BY_STATUS = {
    Status.ERR_INVALID_ARG: InvalidArgument,
    Status.ERR_NOMEM: OutOfMemory,
    Status.ERR_IO: LibraryIOError,
    Status.ERR_FORMAT: FormatError,
    Status.ERR_UNSUPPORTED: UnsupportedError,
    Status.ERR_MODEL: ModelError,
    Status.ERR_CONTEXT_FULL: ContextFull,
    Status.ERR_TOKEN: TokenError,
    Status.ERR_BUFFER_TOO_SMALL: BufferTooSmall,
    Status.ERR_STATE: StateError,
    Status.ERR_ABORTED: Aborted,
    Status.ERR_INTERNAL: InternalError,
    Status.ERR_NUMERIC: NumericError,
}

ERRORS = tuple(_BY_STATUS.values())


def error_class(status):
    """The FreeError subclass raised for a status (FreeError for an unknown value)."""
    try:
        return _BY_STATUS.get(Status(status), FreeError)
    except ValueError:
        return FreeError


def _make_error(status, message="", function=None):
    """The exception for a failed call: an instance of error_class(status)."""
    return error_class(status)(status, message, function)
