"""Python binding for libfree: LLaMA-style GGUF models on the CPU with FREE early exit.

    import libfree

    with libfree.Model("free-llama-22M.gguf") as model, model.context() as ctx:
        print(ctx.generate("In the beginning", max_tokens=32, exit_mode="free"))
        for piece in ctx.stream(" And then", max_tokens=16):
            print(piece, end="", flush=True)

A Model is immutable and may be shared by threads; a Context is one decoding stream, to
be used from one thread at a time. Every failing call raises FreeError with the status
and the library's message.
"""

import ctypes
import dataclasses
import os
import queue
import threading
import weakref
from ctypes import POINTER, byref, c_char, c_float, c_int32, c_size_t, c_void_p, sizeof

from . import _ffi
from ._ffi import BmmRule, ExitMode, LibraryNotFound, LogLevel, Status

__version__ = "0.1.0"
__all__ = ["BmmRule", "Context", "ExitMode", "FreeError", "LibraryNotFound", "LogLevel",
           "Model", "Stats", "Status", "StepInfo", "Piece", "set_log_handler",
           "version", "version_number", "strerror", "load_library"]

_INT32_MIN, _INT32_MAX = -2**31, 2**31 - 1


# -- errors -------------------------------------------------------------------------------

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
        super().__init__(status, message)

    def __str__(self):
        desc = strerror(self.status) if _ffi._lib is not None else str(self.status)
        where = f"{self.function}: " if self.function else ""
        if self.message:
            return f"{where}{self.message} ({desc})"
        return f"{where}{desc}"


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
    raise FreeError(status, msg, function)


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
    exit_mode: int
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

    @property
    def exit_rate(self):
        return self.shallow_exits / self.tokens if self.tokens else 0.0


def _token_array(tokens):
    tokens = [int(t) for t in tokens]
    for t in tokens:
        if not _INT32_MIN <= t <= _INT32_MAX:
            raise FreeError(Status.ERR_TOKEN, f"token id {t} does not fit in int32")
    return (c_int32 * max(len(tokens), 1))(*tokens), len(tokens)


def _text_bytes(text):
    if isinstance(text, str):
        return text.encode("utf-8")
    return bytes(text)


# -- model --------------------------------------------------------------------------------

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


# -- context ------------------------------------------------------------------------------

_PARAM_NAMES = tuple(name for name, _ in _ffi.free_ctx_params._fields_
                     if name not in ("size", "abort_user"))
_FIXED_AT_CREATION = ("n_ctx", "n_threads", "n_batch")


def _enum_value(enum_cls, value, what):
    if isinstance(value, str):
        try:
            return int(enum_cls[value.upper()])
        except KeyError:
            names = ", ".join(repr(m.name.lower()) for m in enum_cls)
            raise ValueError(f"{what} {value!r} is not one of {names}") from None
    return int(enum_cls(value))


class Context(_Handle):
    """A decoding stream on a Model (free_ctx). Keyword parameters are the fields of
    free_ctx_params: n_ctx, n_threads, n_batch, temperature, top_k, top_p, seed,
    exit_mode ('none' | 'free' | 'verify'), exit_layer, threshold, max_queue, adaptive,
    zeta, threshold_min, threshold_max, bmm_rule ('grid' | 'continuous'),
    bmm_min_per_class, bmm_max_updates, bmm_refit_every, bmm_capacity, calibration (the
    text of export_calibration) and abort_fn (a callable returning True to abort)."""

    def __init__(self, model, **params):
        lib = _ffi.lib()
        self._handle = None
        self._stream = None
        self._model = model                   # keeps the model alive while we are
        self._keep = {}                       # objects C points to: calibration, abort_fn
        self._params = _ffi.free_ctx_params()
        _check(lib.free_ctx_params_init(byref(self._params), sizeof(self._params)),
               "free_ctx_params_init")
        self._update_params(params)
        out = c_void_p()
        _check(lib.free_ctx_create(model.handle, byref(self._params), byref(out)),
               "free_ctx_create")
        self._handle = out.value
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
            raise FreeError(Status.ERR_STATE, "a stream() on this context is still running; "
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
    def _update_params(self, params):
        p = self._params
        for name, value in params.items():
            if name not in _PARAM_NAMES:
                raise TypeError(f"unknown context parameter {name!r}")
            if value is None and name not in ("calibration", "abort_fn"):
                continue
            if name == "exit_mode":
                value = _enum_value(ExitMode, value, "exit_mode")
            elif name == "bmm_rule":
                value = _enum_value(BmmRule, value, "bmm_rule")
            elif name == "adaptive":
                value = 1 if value else 0
            elif name == "calibration":
                value = None if value is None else _text_bytes(value)
                self._keep["calibration"] = value
            elif name == "abort_fn":
                value = self._wrap_abort(value)
                self._keep["abort_fn"] = value
            setattr(p, name, value)

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
        """Changes sampling, exit and adaptive settings between generations (n_ctx,
        n_threads and n_batch are fixed at creation)."""
        fixed = [k for k in params if k in _FIXED_AT_CREATION]
        if fixed:
            raise ValueError(f"{', '.join(fixed)} can only be set when creating the context")
        saved = _ffi.free_ctx_params.from_buffer_copy(self._params)
        saved_keep = dict(self._keep)
        self._update_params(params)
        try:
            _check(_ffi.lib().free_ctx_set_params(self.handle, byref(self._params)),
                   "free_ctx_set_params", self._handle)
        except BaseException:
            ctypes.memmove(byref(self._params), byref(saved), sizeof(saved))
            self._keep = saved_keep
            raise

    def params(self):
        """The parameters last given to the library, as a dict."""
        out = {name: getattr(self._params, name) for name in _PARAM_NAMES
               if name not in ("abort_fn", "calibration")}
        out["exit_mode"] = ExitMode(out["exit_mode"])
        out["bmm_rule"] = BmmRule(out["bmm_rule"])
        return out

    # state
    @property
    def n_past(self):
        return int(_ffi.lib().free_ctx_n_past(self.handle))

    @property
    def n_ctx(self):
        return int(_ffi.lib().free_ctx_n_ctx(self.handle))

    def reset(self):
        """Forgets every token; keeps the learned threshold and the statistics."""
        _check(_ffi.lib().free_ctx_reset(self.handle), "free_ctx_reset", self._handle)

    def stats(self):
        s = _ffi.free_stats()
        s.size = sizeof(s)
        _check(_ffi.lib().free_ctx_stats(self.handle, byref(s)), "free_ctx_stats",
               self._handle)
        return Stats(**{f.name: getattr(s, f.name) for f in dataclasses.fields(Stats)})

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
    def _configure(self, temperature, top_k, top_p, seed, exit_mode, threshold, adaptive):
        self.set_params(temperature=temperature, top_k=top_k, top_p=top_p, seed=seed,
                        exit_mode=exit_mode, threshold=threshold, adaptive=adaptive)

    def _decode(self, prompt, max_tokens, on_piece):
        """free_decode with on_piece(token, bytes, free_step_info) -> stop? called for
        each token; exceptions raised in on_piece stop generation and are re-raised."""
        if not 0 <= max_tokens <= _INT32_MAX:
            raise ValueError(f"max_tokens {max_tokens} is not in [0, {_INT32_MAX}]")
        errors = []

        def trampoline(user, token, piece, length, info):
            try:
                data = ctypes.string_at(piece, length) if length else b""
                return 1 if on_piece(int(token), data, info.contents) else 0
            except BaseException as e:
                errors.append(e)
                return 1

        callback = _ffi.free_token_fn(trampoline)   # alive until free_decode returns
        data = None if prompt is None else _text_bytes(prompt)
        handle = self.handle
        st = _ffi.lib().free_decode(handle, data, -1 if data is None else len(data),
                                    int(max_tokens), callback, None)
        if errors:
            raise errors[0]
        return st

    def generate(self, prompt, max_tokens=64, temperature=0.0, top_k=0, top_p=1.0, seed=0,
                 exit_mode="none", threshold=None, adaptive=None, on_token=None):
        """Continues the context with prompt (a BOS is added when the context is empty;
        None or "" continues from the current state) and returns the generated text.
        threshold / adaptive None keep the context's setting. on_token(Piece) may return
        True to stop. On failure the FreeError carries the text so far as .text."""
        self._configure(temperature, top_k, top_p, seed, exit_mode, threshold, adaptive)
        pieces = []

        def on_piece(token, data, info):
            pieces.append(data)
            if on_token is not None:
                return on_token(Piece(token, data.decode("utf-8", errors="replace"),
                                      StepInfo._from_c(info)))
            return False

        st = self._decode(prompt, max_tokens, on_piece)
        text = b"".join(pieces).decode("utf-8", errors="replace")
        if st != Status.OK:
            try:
                _check(st, "free_decode", self._handle)
            except FreeError as e:
                e.text = text
                raise
        return text

    def stream(self, prompt, max_tokens=64, temperature=0.0, top_k=0, top_p=1.0, seed=0,
               exit_mode="none", threshold=None, adaptive=None, details=False):
        """Like generate, but yields the text pieces as they are produced (Piece objects
        when details=True). Generation runs in lock-step with the consumer: leaving the
        loop early stops it. The context cannot be used otherwise until the iterator is
        exhausted or closed."""
        self._configure(temperature, top_k, top_p, seed, exit_mode, threshold, adaptive)
        return self._stream_gen(prompt, max_tokens, details)

    def _stream_gen(self, prompt, max_tokens, details):
        run = _StreamRun(self, prompt, max_tokens)
        self._stream = run
        try:
            while True:
                kind, value = run.items.get()
                if kind == "piece":
                    token, data, info = value
                    if details:
                        yield Piece(token, data.decode("utf-8", errors="replace"), info)
                    elif data:
                        yield data.decode("utf-8", errors="replace")
                    run.resume.release()
                elif kind == "error":
                    raise value
                else:
                    return
        finally:
            run.cancel()
            self._stream = None


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
