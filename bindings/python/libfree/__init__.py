"""Python binding for libfree: LLaMA-style GGUF models on the CPU with FREE early exit.

    import libfree

    with libfree.Model("free-llama-22M.gguf") as model:
        print(model.generate("In the beginning", max_tokens=32))        # one shot
        with model.context(exit_mode="free", threshold=0.5) as ctx:
            print(ctx.generate("In the beginning", max_tokens=32))      # early exit
            for piece in ctx.stream("The President shall", max_tokens=16):
                print(piece, end="", flush=True)

A Model is immutable and may be shared by threads; a Context holds the settings and the
cached tokens of one decoding stream, to be used from one thread at a time. Each
generate() / stream() call stands alone (the same prompt and settings give the same text)
unless it is asked to continue (reset=False); keywords left out keep the context's
settings. Library failures raise FreeError subclasses carrying the status (see _errors).
"""

import ctypes
import dataclasses
import errno
import os
import queue
import threading
import weakref
from ctypes import (POINTER, byref, c_char, c_char_p, c_float, c_int32, c_size_t, c_void_p,
                    sizeof)

from . import _errors, _ffi
from ._errors import (Aborted, BufferTooSmall, ContextFull, FormatError, FreeError,
                      InternalError, InvalidArgument, LibraryIOError, ModelError,
                      NumericError, OutOfMemory, StateError, TokenError, UnsupportedError)
from ._ffi import BmmRule, ExitMode, Finish, LibraryNotFound, LogLevel, Status

__version__ = "0.1.0"
__all__ = ["BmmRule", "Context", "ExitMode", "Finish", "FreeError", "LibraryNotFound", "LogLevel",
           "Model", "Stats", "Status", "StepInfo", "Piece", "set_log_handler",
           "version", "version_number", "strerror", "load_library",
           "Aborted", "BufferTooSmall", "ContextFull", "FormatError", "InternalError",
           "InvalidArgument", "LibraryIOError", "ModelError", "NumericError", "OutOfMemory",
           "StateError", "TokenError", "UnsupportedError"]

_INT32_MIN, _INT32_MAX = -2**31, 2**31 - 1


# -- errors -------------------------------------------------------------------------------

def _decode_c(s):
    return s.decode("utf-8", errors="replace") if s else ""


def _check(status, function, ctx_handle=None):
    if status == Status.OK:
        return
    lib = _ffi.lib()
    msg = ""
    if ctx_handle:
        msg = _decode_c(lib.free_ctx_last_error(ctx_handle))
    if not msg:
        msg = _decode_c(lib.free_last_error())
    raise _errors._make_error(status, msg, function)


def strerror(status):
    """The library's short English description of a status."""
    return _decode_c(_ffi.lib().free_strerror(int(status)))


def version():
    """The library's version string ("MAJOR.MINOR.PATCH")."""
    return _decode_c(_ffi.lib().free_version_string())


def version_number():
    """The library's FREE_VERSION_NUMBER (MAJOR * 10000 + MINOR * 100 + PATCH)."""
    return int(_ffi.lib().free_version_number())


def load_library(path=None):
    """Loads the shared library now: from `path`, or by the usual search (LIBFREE_PATH,
    next to the package, the build tree, the system). Raises LibraryNotFound."""
    return _ffi.set_library(path) if path is not None else _ffi.lib()


# -- logging ------------------------------------------------------------------------------

# The installed C callback must outlive every call that may log: kept here.
_log_callback = None


def set_log_handler(handler, max_level=LogLevel.WARN):
    """Routes the library's log messages to handler(level: LogLevel, message: str), or
    restores the default (ERROR and WARN to stderr) when handler is None. Process-wide."""
    global _log_callback
    lib = _ffi.lib()
    if handler is None:
        lib.free_log_set(_ffi.free_log_fn(), None, int(max_level))
        _log_callback = None
        return

    def trampoline(user, level, message):
        try:
            try:
                level = LogLevel(level)
            except ValueError:
                pass
            handler(level, _decode_c(message))
        except Exception:   # an exception cannot cross into C; a log line is not worth it
            pass

    cb = _ffi.free_log_fn(trampoline)
    lib.free_log_set(cb, None, int(max_level))
    _log_callback = cb


# -- small value types --------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class StepInfo:
    """How a token was produced (free_step_info)."""
    position: int
    layers: int
    early_exit: bool
    confidence: float
    threshold: float
    is_eos: bool

    @classmethod
    def _from_c(cls, info):
        return cls(position=info.position, layers=info.layers,
                   early_exit=bool(info.early_exit), confidence=info.confidence,
                   threshold=info.threshold, is_eos=bool(info.is_eos))


@dataclasses.dataclass(frozen=True)
class Piece:
    """One streamed token: its id, the text it completes ('' when it ends mid-character)
    and how it was produced."""
    token: int
    text: str
    info: StepInfo


@dataclasses.dataclass(frozen=True)
class Stats:
    """Totals since the context was created or its statistics reset (free_stats)."""
    exit_mode: ExitMode
    exit_layer: int
    n_layers: int
    n_threads: int
    threshold: float
    prompt_tokens: int
    tokens: int
    shallow_exits: int
    deep_passes: int
    sync_rows: int
    mean_sync_rows: float
    drafts_rejected: int
    avg_layers_per_token: float
    agreement_checked: int
    agreement_matched: int
    prefill_ms: float
    decode_ms: float
    shallow_ms: float
    deep_ms: float
    head_ms: float
    adaptive: int
    bmm_fits: int
    bmm_frozen: int
    bmm_samples_agree: int
    bmm_samples_disagree: int
    bmm_alpha_agree: float
    bmm_beta_agree: float
    bmm_alpha_disagree: float
    bmm_beta_disagree: float
    shallow_passes: int
    layers_read_per_token: float
    reused_tokens: int
    exit_auto: int
    verify_full_depth: int
    verify_fallbacks: int
    verify_full_tokens: int
    verify_speedup: float
    verify_timed: int
    verify_probing: int
    verify_windows: int
    verify_probes: int
    verify_token_ms: float
    verify_full_ms: float
    verify_shallow_ms: float
    verify_deep_ms: float
    verify_deep_rows: float

    @property
    def exit_rate(self):
        return self.shallow_exits / self.tokens if self.tokens else 0.0


def _token_array(tokens):
    if isinstance(tokens, (str, bytes, bytearray)) or not hasattr(tokens, "__iter__"):
        raise TypeError(f"tokens must be a sequence of ints, not {type(tokens).__name__}")
    out = []
    for t in tokens:
        if isinstance(t, bool) or not hasattr(t, "__index__"):
            raise TypeError(f"token ids must be ints, not {type(t).__name__}")
        t = t.__index__()
        if not _INT32_MIN <= t <= _INT32_MAX:
            raise TokenError(Status.ERR_TOKEN, f"token id {t} does not fit in int32")
        out.append(t)
    return (c_int32 * max(len(out), 1))(*out), len(out)


def _text_bytes(text, what="text"):
    """UTF-8 bytes of a str, or the bytes of a bytes-like object; TypeError otherwise
    (bytes(123) would be 123 NUL bytes)."""
    if isinstance(text, str):
        return text.encode("utf-8")
    if isinstance(text, (bytes, bytearray, memoryview)):
        return bytes(text)
    raise TypeError(f"{what} must be str or bytes, not {type(text).__name__}")


# -- model --------------------------------------------------------------------------------

def _chat_array(messages):
    """A free_chat_message array for messages, and the (role, content) bytes it points
    to (kept alive by the caller)."""
    keep = []
    for m in messages:
        if isinstance(m, dict):
            role, content = m["role"], m["content"]
        else:
            role, content = m
        keep.append((_text_bytes(role, "role"), _text_bytes(content, "content")))
    arr = (_ffi.free_chat_message * max(len(keep), 1))()
    for i, (role, content) in enumerate(keep):
        arr[i].role, arr[i].content = role, content
    return arr, keep


class _Handle:
    """A C handle owned by a Python object: closed by close(), by `with`, or when
    garbage-collected. Subclasses set self._handle and define close()."""

    _handle = None

    @property
    def closed(self):
        return not self._handle

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass


class Model(_Handle):
    """A loaded GGUF model (free_model). Use as a context manager or call close()."""

    def __init__(self, path, *, vocab_only=False):
        lib = _ffi.lib()
        self._handle = None
        self._contexts = weakref.WeakSet()
        self.path = os.fspath(path)
        if isinstance(self.path, bytes):
            self.path = os.fsdecode(self.path)
        # The library says ERR_IO for every open failure; Python users expect the
        # built-in exceptions for the common ones.
        if not os.path.exists(self.path):
            raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), self.path)
        if os.path.isdir(self.path):
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), self.path)
        p = _ffi.free_model_params()
        _check(lib.free_model_params_init(byref(p), sizeof(p)), "free_model_params_init")
        p.vocab_only = 1 if vocab_only else 0
        out = c_void_p()
        _check(lib.free_model_load(os.fsencode(self.path), byref(p), byref(out)),
               "free_model_load")
        self._handle = out.value

    @classmethod
    def load(cls, path, **kwargs):
        return cls(path, **kwargs)

    @property
    def handle(self):
        if not self._handle:
            raise ValueError("the model is closed")
        return self._handle

    def close(self):
        """Destroys the model, closing its live contexts first (C requires contexts to
        go before their model)."""
        if not self._handle:
            return
        for ctx in list(self._contexts):
            ctx.close()
        _ffi.lib().free_model_destroy(self._handle)
        self._handle = None

    def __repr__(self):
        if not self._handle:
            return "<libfree.Model closed>"
        return f"<libfree.Model {self.description!r}>"

    # queries
    n_layers = property(lambda self: int(_ffi.lib().free_model_n_layers(self.handle)))
    exit_layer = property(lambda self: int(_ffi.lib().free_model_exit_layer(self.handle)))
    n_vocab = property(lambda self: int(_ffi.lib().free_model_n_vocab(self.handle)))
    n_embd = property(lambda self: int(_ffi.lib().free_model_n_embd(self.handle)))
    n_ctx_train = property(lambda self: int(_ffi.lib().free_model_n_ctx_train(self.handle)))
    n_params = property(lambda self: int(_ffi.lib().free_model_n_params(self.handle)))
    architecture = property(
        lambda self: _decode_c(_ffi.lib().free_model_architecture(self.handle)))
    description = property(
        lambda self: _decode_c(_ffi.lib().free_model_describe(self.handle)))
    bos = property(lambda self: int(_ffi.lib().free_token_bos(self.handle)))
    eos = property(lambda self: int(_ffi.lib().free_token_eos(self.handle)))

    # tokens
    def tokenize(self, text, add_bos=True):
        """Token ids of text (str or UTF-8 bytes), with a leading BOS when add_bos."""
        lib = _ffi.lib()
        data = _text_bytes(text)
        n_out = c_size_t(0)
        cap = len(data) + 2          # at most one token per byte, plus BOS
        while True:
            buf = (c_int32 * cap)()
            st = lib.free_tokenize(self.handle, data, len(data), 1 if add_bos else 0, buf,
                                   cap, byref(n_out))
            if st == Status.ERR_BUFFER_TOO_SMALL and n_out.value > cap:
                cap = n_out.value
                continue
            _check(st, "free_tokenize")
            return list(buf[:n_out.value])

    def _tokenize_ex(self, text, flags):
        """free_tokenize_ex: token ids of text with FREE_TOKENIZE_* flags."""
        lib = _ffi.lib()
        data = _text_bytes(text)
        n_out = c_size_t(0)
        cap = len(data) + 2
        while True:
            buf = (c_int32 * cap)()
            st = lib.free_tokenize_ex(self.handle, data, len(data), flags, buf, cap,
                                      byref(n_out))
            if st == Status.ERR_BUFFER_TOO_SMALL and n_out.value > cap:
                cap = n_out.value
                continue
            _check(st, "free_tokenize_ex")
            return list(buf[:n_out.value])

    def token_to_piece(self, token):
        """The raw bytes a token contributes to text (may be part of a UTF-8 character)."""
        return self._sized_bytes(
            lambda buf, cap, n: _ffi.lib().free_token_to_piece(self.handle, int(token),
                                                               buf, cap, n),
            "free_token_to_piece", 32)

    def detokenize(self, tokens):
        """The text of a token list, decoded as SentencePiece does."""
        arr, n = _token_array(tokens)
        data = self._sized_bytes(
            lambda buf, cap, n_out: _ffi.lib().free_detokenize(self.handle, arr, n, buf,
                                                               cap, n_out),
            "free_detokenize", 8 * n + 16)
        return data.decode("utf-8", errors="replace")

    @staticmethod
    def _sized_bytes(call, function, cap, ctx_handle=None):
        # The library's buffer rule: BUFFER_TOO_SMALL reports the needed size in n_out.
        n_out = c_size_t(0)
        while True:
            buf = (c_char * (cap + 1))()
            st = call(buf, cap + 1, byref(n_out))
            if st == Status.ERR_BUFFER_TOO_SMALL and n_out.value > cap:
                cap = n_out.value
                continue
            _check(st, function, ctx_handle)
            return bytes(buf[:n_out.value])

    def context(self, **params):
        """A new Context on this model (see Context for the parameters)."""
        return Context(self, **params)

    def generate(self, prompt, max_tokens=64, *, on_token=None, **params):
        """One-shot generation: a context with **params (any Context parameter), the text
        generated after prompt, and the context closed again."""
        with Context(self, **params) as ctx:
            return ctx.generate(prompt, max_tokens, on_token=on_token)

    def stream(self, prompt, max_tokens=64, *, details=False, **params):
        """One-shot streaming: like generate, yielding the pieces (see Context.stream)."""
        ctx = Context(self, **params)
        gen = ctx.stream(prompt, max_tokens, details=details)

        def run():
            try:
                yield from gen
            finally:
                gen.close()
                ctx.close()
        return run()

    # chat
    @property
    def chat_template(self):
        """The chat format name the model's tokenizer.chat_template is recognised as
        ("chatml", "llama3", ...), or None."""
        name = _ffi.lib().free_model_chat_template(self.handle)
        return None if name is None else _decode_c(name)

    def format_chat(self, messages, template=None, add_assistant=True):
        """The prompt text of a conversation in a chat format (free_chat_format).
        messages: (role, content) pairs or dicts with "role" and "content"; template: a
        format name or template text, None for the model's template."""
        arr, keep = _chat_array(messages)
        tmpl = None if template is None else _text_bytes(template, "template")
        data = self._sized_bytes(
            lambda buf, cap, n_out: _ffi.lib().free_chat_format(
                self.handle, tmpl, arr, len(keep), 1 if add_assistant else 0, buf, cap,
                n_out),
            "free_chat_format", 256 + sum(len(c) + len(r) + 32 for r, c in keep))
        return data.decode("utf-8")


# -- context ------------------------------------------------------------------------------

_PARAM_NAMES = tuple(name for name, _ in _ffi.free_ctx_params._fields_
                     if name not in ("size", "abort_user", "n_stop"))
_FIXED_AT_CREATION = ("n_ctx", "n_threads", "n_batch")
# Parameters that mean something only with early exit (exit_mode 'free' or 'verify').
_EXIT_ONLY = ("threshold", "adaptive", "min_agreement")


def _enum_value(enum_cls, value, what):
    if isinstance(value, str):
        try:
            return int(enum_cls[value.upper()])
        except KeyError:
            names = ", ".join(repr(m.name.lower()) for m in enum_cls)
            raise ValueError(f"{what} {value!r} is not one of {names}") from None
    if isinstance(value, bool) or not hasattr(value, "__index__"):
        raise TypeError(f"{what} must be a str or an int, not {type(value).__name__}")
    try:
        return int(enum_cls(value))
    except ValueError:
        names = ", ".join(repr(m.name.lower()) for m in enum_cls)
        raise ValueError(f"{what} {value!r} is not one of {names}") from None


def _max_tokens(n):
    if n is None:
        return -1
    if isinstance(n, bool) or not hasattr(n, "__index__"):
        raise TypeError(f"max_tokens must be an int or None, not {type(n).__name__}")
    n = n.__index__()
    if n == -1:
        return -1
    if not 0 <= n <= _INT32_MAX:
        raise ValueError(f"max_tokens {n} is not in [0, {_INT32_MAX}] (None or -1: no limit)")
    return n


class Context(_Handle):
    """A decoding stream on a Model (free_ctx): its settings and its cached tokens.

    Keyword parameters are the fields of free_ctx_params: n_ctx, n_threads, n_batch,
    temperature, top_k, top_p, seed, exit_mode ('auto' (default) | 'none' | 'free' |
    'verify'), exit_layer,
    threshold, max_queue, adaptive, zeta, threshold_min, threshold_max, bmm_rule
    ('grid' | 'continuous'), bmm_min_per_class, bmm_max_updates, bmm_refit_every,
    bmm_capacity, calibration (the text of export_calibration), abort_fn (a callable
    returning True to abort), and the sampling controls min_p, repeat_penalty,
    repeat_last_n, frequency_penalty, presence_penalty and stop (a str or a list of
    str), and min_agreement (free/verify: the lowest calibrated threshold whose token
    agreement is at least this, 95% lower bound) and calibration_file (the path of a
    calibration curve written by free-calibrate -o, used instead of the model's). The default exit_mode 'auto' decodes a
    model with a trained exit in VERIFY at its calibrated threshold (falling back to full
    depth when drafting does not pay) and one without at full depth. threshold,
    min_agreement and adaptive apply only to early exit: given without an exit mode they
    select 'free'; with exit_mode='none' they are a ValueError.

    generate() and stream() take the same keywords for one call; those left out (None)
    keep the context's settings."""

    def __init__(self, model, **params):
        lib = _ffi.lib()
        self._handle = None
        self._stream = None
        self._chat_state = None               # (text the context holds, n_past): chat()
        self._model = model                   # keeps the model alive while we are
        self._keep = {}                       # objects C points to: calibration, abort_fn
        base = _ffi.free_ctx_params()
        _check(lib.free_ctx_params_init(byref(base), sizeof(base)), "free_ctx_params_init")
        self._params = base
        self._params, self._keep = self._prepare(params, allow_fixed=True)
        out = c_void_p()
        _check(lib.free_ctx_create(model.handle, byref(self._params), byref(out)),
               "free_ctx_create")
        self._handle = out.value
        self._forget_calibration()
        model._contexts.add(self)

    # lifetime
    @property
    def model(self):
        return self._model

    @property
    def handle(self):
        if not self._handle:
            raise ValueError("the context is closed")
        if self._stream is not None and threading.current_thread() is not self._stream.thread:
            raise StateError(Status.ERR_STATE, "a stream() on this context is still running; "
                             "exhaust or close it first")
        return self._handle

    def close(self):
        if not self._handle:
            return
        if self._stream is not None:
            self._stream.cancel()
        _ffi.lib().free_ctx_destroy(self._handle)
        self._handle = None

    def __repr__(self):
        if not self._handle:
            return "<libfree.Context closed>"
        return f"<libfree.Context n_past={self.n_past} n_ctx={self.n_ctx}>"

    # parameters
    def _prepare(self, params, allow_fixed=False):
        """The params struct and kept objects that result from applying params to the
        current ones, checked (TypeError / ValueError) without calling C."""
        p = _ffi.free_ctx_params.from_buffer_copy(self._params)
        keep = dict(self._keep)
        for name, value in params.items():
            if name not in _PARAM_NAMES:
                raise TypeError(f"unknown context parameter {name!r}")
            if name in _FIXED_AT_CREATION and not allow_fixed:
                raise ValueError(f"{name} can only be set when creating the context")
            if value is None and name not in ("calibration", "calibration_file", "abort_fn"):
                continue
            if name == "exit_mode":
                value = _enum_value(ExitMode, value, "exit_mode")
            elif name == "bmm_rule":
                value = _enum_value(BmmRule, value, "bmm_rule")
            elif name == "adaptive":
                value = 1 if value else 0
            elif name == "calibration":
                value = None if value is None else _text_bytes(value, "calibration")
                if value is not None and b"\0" in value:
                    # ctypes would cut the text there and the library would report the
                    # wrong problem.
                    raise ValueError("calibration text has a NUL byte at offset "
                                     f"{value.index(bytes(1))}")
                keep["calibration"] = value
            elif name == "calibration_file":
                # A path (str, bytes or os.PathLike) of a calibration curve file; read by
                # the library during the call, like calibration.
                value = None if value is None else os.fsencode(value)
                keep["calibration_file"] = value
            elif name == "abort_fn":
                if value is not None and not callable(value):
                    raise TypeError("abort_fn must be callable or None")
                value = self._wrap_abort(value)
                keep["abort_fn"] = value
            elif name == "stop":
                if isinstance(value, (str, bytes)):
                    value = [value]
                if not isinstance(value, (list, tuple)):
                    raise TypeError(f"stop must be a str or a list of str, not "
                                    f"{type(value).__name__}")
                data = [_text_bytes(v, "a stop string") for v in value]
                arr = (c_char_p * max(len(data), 1))(*data)
                keep["stop"] = arr
                p.n_stop = len(data)
                value = ctypes.cast(arr, POINTER(c_char_p)) if data else None
            try:
                setattr(p, name, value)
            except TypeError:
                ctype = dict(_ffi.free_ctx_params._fields_)[name]
                raise TypeError(f"{name} must be {'a float' if ctype is c_float else 'an int'}"
                                f", not {type(value).__name__}") from None
        # Options of early exit select exit_mode 'free' when no exit mode is given with
        # them; with exit_mode 'none' they are a contradiction (as in free-cli).
        given = [n for n in _EXIT_ONLY if params.get(n) not in (None, False)]
        if given and p.exit_mode in (ExitMode.NONE, ExitMode.AUTO):
            if params.get("exit_mode") is not None and p.exit_mode == ExitMode.NONE:
                raise ValueError(f"exit_mode 'none' contradicts {' and '.join(given)} (they "
                                 f"apply to early exit: 'free' or 'verify')")
            if params.get("exit_mode") is None:
                p.exit_mode = int(ExitMode.FREE)
        return p, keep

    def _commit(self, p, keep):
        """Gives p to the library (free_ctx_set_params); on success it becomes the
        context's parameters."""
        st = _ffi.lib().free_ctx_set_params(self.handle, byref(p))
        _check(st, "free_ctx_set_params", self._handle)
        self._params, self._keep = p, keep
        self._forget_calibration()

    def _forget_calibration(self):
        # The library reads a calibration once; giving it again would throw away what
        # the estimator learned since.
        self._params.calibration = None
        self._keep.pop("calibration", None)
        self._params.calibration_file = None
        self._keep.pop("calibration_file", None)

    @staticmethod
    def _wrap_abort(fn):
        if fn is None:
            return _ffi.free_abort_fn()

        def trampoline(user):
            try:
                return 1 if fn() else 0
            except BaseException:
                return 1          # an exception in the callback aborts the computation
        return _ffi.free_abort_fn(trampoline)

    def set_params(self, **params):
        """Changes the context's sampling, exit and adaptive settings (n_ctx, n_threads
        and n_batch are fixed at creation). Keywords left out keep their value."""
        self._commit(*self._prepare(params))

    def params(self):
        """The parameters in force, as a dict."""
        out = {name: getattr(self._params, name) for name in _PARAM_NAMES
               if name not in ("abort_fn", "calibration", "calibration_file", "stop")}
        out["exit_mode"] = ExitMode(out["exit_mode"])
        out["bmm_rule"] = BmmRule(out["bmm_rule"])
        p = self._params
        out["stop"] = [_decode_c(p.stop[i]) for i in range(p.n_stop)] if p.n_stop else []
        return out

    @property
    def finish_reason(self):
        """Why the last generate() / stream() stopped: a Finish (NONE after a failure)."""
        return Finish(_ffi.lib().free_ctx_finish_reason(self.handle))

    # state
    @property
    def n_past(self):
        return int(_ffi.lib().free_ctx_n_past(self.handle))

    @property
    def n_ctx(self):
        return int(_ffi.lib().free_ctx_n_ctx(self.handle))

    def reset(self):
        """Forgets every token (the library may keep their cache for a prompt that
        starts the same way); keeps the settings, the learned threshold and the
        statistics."""
        _check(_ffi.lib().free_ctx_reset(self.handle), "free_ctx_reset", self._handle)

    def truncate(self, n_keep):
        """Keeps the first n_keep tokens and drops the rest (free_ctx_truncate); the
        last kept token is pending, so generate(..., reset=False) continues after it."""
        if isinstance(n_keep, bool) or not hasattr(n_keep, "__index__"):
            raise TypeError(f"n_keep must be an int, not {type(n_keep).__name__}")
        n_keep = n_keep.__index__()
        if not 0 <= n_keep <= _INT32_MAX:
            raise ValueError(f"n_keep {n_keep} is negative or too large")
        _check(_ffi.lib().free_ctx_truncate(self.handle, n_keep), "free_ctx_truncate",
               self._handle)

    def save_state(self):
        """The context's state as bytes (free_ctx_state_save): its tokens and caches, the
        queue, the sampler's random state, the estimator; not its parameters."""
        lib, h = _ffi.lib(), self.handle
        size = c_size_t(0)
        _check(lib.free_ctx_state_size(h, byref(size)), "free_ctx_state_size", h)
        buf = ctypes.create_string_buffer(max(size.value, 1))
        n = c_size_t(0)
        _check(lib.free_ctx_state_save(h, buf, size.value, byref(n)), "free_ctx_state_save", h)
        return buf.raw[:n.value]

    def load_state(self, data):
        """Restores a state from save_state() into this context (created with the same
        parameters): it then continues exactly as the saved one. FormatError for a
        corrupted or foreign state."""
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"state must be bytes, not {type(data).__name__}")
        data = bytes(data)
        buf = ctypes.create_string_buffer(data, max(len(data), 1))
        _check(_ffi.lib().free_ctx_state_load(self.handle, buf, len(data)),
               "free_ctx_state_load", self._handle)

    def stats(self):
        s = _ffi.free_stats()
        s.size = sizeof(s)
        _check(_ffi.lib().free_ctx_stats(self.handle, byref(s)), "free_ctx_stats",
               self._handle)
        values = {f.name: getattr(s, f.name) for f in dataclasses.fields(Stats)}
        values["exit_mode"] = ExitMode(values["exit_mode"])
        return Stats(**values)

    def reset_stats(self):
        _check(_ffi.lib().free_ctx_reset_stats(self.handle), "free_ctx_reset_stats",
               self._handle)

    def export_calibration(self):
        """The learned threshold state as text, for Context(calibration=...)."""
        h = self.handle
        data = Model._sized_bytes(
            lambda buf, cap, n: _ffi.lib().free_ctx_export_calibration(h, buf, cap, n),
            "free_ctx_export_calibration", 256, h)
        return data.decode("utf-8", errors="replace")

    # low-level decoding
    def prefill(self, tokens):
        """Appends tokens and runs them through all layers."""
        arr, n = _token_array(tokens)
        _check(_ffi.lib().free_prefill(self.handle, arr, n), "free_prefill", self._handle)

    def eval(self, tokens):
        """Appends tokens like prefill and returns their full-depth logits as a float32
        numpy array [len(tokens), n_vocab]."""
        import numpy as np
        arr, n = _token_array(tokens)
        out = np.zeros((n, self._model.n_vocab), dtype=np.float32)
        _check(_ffi.lib().free_eval(self.handle, arr, n,
                                    out.ctypes.data_as(POINTER(c_float))),
               "free_eval", self._handle)
        return out

    def step(self):
        """Produces the next token: returns (token, StepInfo)."""
        token = c_int32(0)
        info = _ffi.free_step_info()
        info.size = sizeof(info)
        _check(_ffi.lib().free_step(self.handle, byref(token), byref(info)), "free_step",
               self._handle)
        return int(token.value), StepInfo._from_c(info)

    # generation
    def _begin(self, params, reset):
        """Applies one call's keyword overrides (and, when the call stands alone,
        reseeds the sampler and forgets the tokens: the library keeps their cache for the
        next prompt to reuse). Returns what _end restores."""
        saved = (self._params, self._keep)
        if params:
            self._commit(*self._prepare(params))
        elif reset:
            self._commit(self._params, self._keep)    # same settings: reseeds the RNG
        if reset:
            try:
                self.reset()
            except BaseException:
                self._end(saved if params else None)
                raise
        return saved if params else None

    def _end(self, saved):
        if saved is not None and self._handle:
            self._commit(*saved)

    @staticmethod
    def _call_params(params, **named):
        out = {k: v for k, v in named.items() if v is not None}
        for k, v in params.items():
            if v is not None:
                out[k] = v
        return out

    def _decode(self, data, max_tokens, on_piece):
        """free_decode with on_piece(token, bytes, free_step_info) -> stop? called for
        each token; exceptions raised in on_piece stop generation and are re-raised."""
        errors = []

        def trampoline(user, token, piece, length, info):
            try:
                data = ctypes.string_at(piece, length) if length else b""
                return 1 if on_piece(int(token), data, info.contents) else 0
            except BaseException as e:
                errors.append(e)
                return 1

        callback = _ffi.free_token_fn(trampoline)   # alive until free_decode returns
        handle = self.handle
        st = _ffi.lib().free_decode(handle, data, -1 if data is None else len(data),
                                    max_tokens, callback, None)
        if errors:
            raise errors[0]
        return st

    @staticmethod
    def _prompt(prompt):
        return None if prompt is None else _text_bytes(prompt, "prompt")

    def generate(self, prompt=None, max_tokens=64, *, temperature=None, top_k=None,
                 top_p=None, seed=None, exit_mode=None, threshold=None, adaptive=None,
                 stop=None, min_p=None, repeat_penalty=None, on_token=None, reset=True,
                 **params):
        """The text generated after prompt (str or UTF-8 bytes; a BOS is put first).

        Each call stands alone: it starts from an empty context (reusing the cached
        prefix its tokens share with the previous call) with the sampler reseeded, so
        the same prompt and settings give the same text. reset=False continues after
        what the context holds instead (prompt None or "" adds no text).
        max_tokens None or -1: until end-of-sequence or a full context.

        The keywords (temperature, top_k, top_p, seed, exit_mode, threshold, adaptive,
        stop (a str or a list of them), min_p, repeat_penalty, and any other context
        parameter but n_ctx, n_threads, n_batch: repeat_last_n, frequency_penalty,
        presence_penalty, ...) apply to this call only; left out, they keep the context's
        settings. The text ends before the first stop string; finish_reason says why it
        ended. on_token(Piece) may return True to stop. On failure the FreeError carries
        the text so far as .text."""
        data = self._prompt(prompt)
        n = _max_tokens(max_tokens)
        params = self._call_params(params, temperature=temperature, top_k=top_k,
                                   top_p=top_p, seed=seed, exit_mode=exit_mode,
                                   threshold=threshold, adaptive=adaptive, stop=stop,
                                   min_p=min_p, repeat_penalty=repeat_penalty)
        pieces = []

        def on_piece(token, data, info):
            pieces.append(data)
            if on_token is not None:
                return on_token(Piece(token, data.decode("utf-8", errors="replace"),
                                      StepInfo._from_c(info)))
            return False

        saved = self._begin(params, reset)
        try:
            st = self._decode(data, n, on_piece)
        finally:
            self._end(saved)
        text = b"".join(pieces).decode("utf-8", errors="replace")
        if st != Status.OK:
            try:
                _check(st, "free_decode", self._handle)
            except FreeError as e:
                e.text = text
                raise
        return text

    def chat(self, messages, max_tokens=256, *, template=None, on_token=None, **params):
        """Answers a conversation and returns the assistant's reply. messages: (role,
        content) pairs or {"role", "content"} dicts, the last one usually the user's;
        template: a format name ("chatml", ...) or None for the model's.

        The text is tokenized with special-token parsing (the format's markers become
        their tokens) and the reply ends at an end-of-generation token. When messages
        continue the conversation of the previous chat call on this context (its
        messages, then its reply, then more), only the new text is prefilled: the KV
        cache is kept between turns. Otherwise the call stands alone like generate.
        Sampling and early-exit keywords as generate (this call only)."""
        messages = list(messages)
        model = self._model
        text = model.format_chat(messages, template, add_assistant=True)
        prev = self._chat_state
        go_on = prev is not None and prev[1] == self.n_past and text.startswith(prev[0])
        prompt = text[len(prev[0]):] if go_on else text
        self._chat_state = None
        saved = self._begin(self._call_params(params), not go_on)
        try:
            # The format's markers must become their tokens: special-token parsing, and
            # BOS (as the vocabulary says) when the context is empty.
            flags = _ffi.TOKENIZE_PARSE_SPECIAL
            if self.n_past == 0:
                flags |= _ffi.TOKENIZE_ADD_SPECIAL
            ids = model._tokenize_ex(prompt, flags)
            if ids:
                self.prefill(ids)
            reply = self.generate(None, max_tokens, on_token=on_token, reset=False)
        finally:
            self._end(saved)
        held = self._model.format_chat(messages + [("assistant", reply)], template,
                                       add_assistant=False)
        self._chat_state = (held, self.n_past)
        return reply

    def stream(self, prompt=None, max_tokens=64, *, temperature=None, top_k=None,
               top_p=None, seed=None, exit_mode=None, threshold=None, adaptive=None,
               stop=None, min_p=None, repeat_penalty=None, details=False, reset=True,
               **params):
        """Like generate, but yields the text pieces as they are produced (Piece objects
        when details=True). Generation runs in lock-step with the consumer: leaving the
        loop early stops it. The context cannot be used otherwise until the iterator is
        exhausted or closed. Arguments are checked here; the call's settings apply from
        the first next()."""
        data = self._prompt(prompt)
        n = _max_tokens(max_tokens)
        params = self._call_params(params, temperature=temperature, top_k=top_k,
                                   top_p=top_p, seed=seed, exit_mode=exit_mode,
                                   threshold=threshold, adaptive=adaptive, stop=stop,
                                   min_p=min_p, repeat_penalty=repeat_penalty)
        self._prepare(params)                        # TypeError / ValueError now
        return self._stream_gen(data, n, details, params, reset)

    def _stream_gen(self, data, max_tokens, details, params, reset):
        saved = self._begin(params, reset)
        try:
            run = _StreamRun(self, data, max_tokens)
            self._stream = run
            try:
                while True:
                    kind, value = run.items.get()
                    if kind == "piece":
                        token, piece, info = value
                        if details:
                            yield Piece(token, piece.decode("utf-8", errors="replace"), info)
                        elif piece:
                            yield piece.decode("utf-8", errors="replace")
                        run.resume.release()
                    elif kind == "error":
                        raise value
                    else:
                        return
            finally:
                run.cancel()
                self._stream = None
        finally:
            self._end(saved)


class _StreamRun:
    """free_decode on a worker thread whose token callback hands each piece to the
    consuming generator and waits until it asks for the next one."""

    def __init__(self, ctx, prompt, max_tokens):
        self.items = queue.Queue()
        self.resume = threading.Semaphore(0)
        self.stopping = False
        self.finished = False
        self.thread = threading.Thread(target=self._work, args=(ctx, prompt, max_tokens),
                                       name="libfree-stream", daemon=True)
        self.thread.start()

    def _work(self, ctx, prompt, max_tokens):
        def on_piece(token, data, info):
            if self.stopping:
                return True
            self.items.put(("piece", (token, data, StepInfo._from_c(info))))
            self.resume.acquire()
            return self.stopping

        try:
            st = ctx._decode(prompt, max_tokens, on_piece)
            # Checked here: free_last_error() is per thread.
            _check(st, "free_decode", ctx._handle)
            self.items.put(("done", None))
        except BaseException as e:
            self.items.put(("error", e))

    def cancel(self):
        if self.finished:
            return
        self.stopping = True
        self.resume.release()
        self.thread.join()
        self.finished = True
