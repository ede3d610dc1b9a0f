"""Raw ctypes declarations of include/free/free.h, in header order.

Structs and enums are usable without the shared library (the ABI test compares them to
the C compiler's view); the library itself is loaded on first use by lib().
"""

import ctypes
import ctypes.util
import enum
import os
import pathlib
import shutil
import subprocess
import threading

from ctypes import (CFUNCTYPE, POINTER, Structure, c_char, c_char_p, c_double, c_float,
                    c_int, c_int32, c_size_t, c_ssize_t, c_uint32, c_uint64, c_void_p)

SONAME = "libfree.so.0"
# The first release whose structs this binding mirrors (FREE_VERSION_NUMBER).
BINDING_VERSION_NUMBER = 100

# -- enums --------------------------------------------------------------------------------


class Status(enum.IntEnum):
    OK = 0
    ERR_INVALID_ARG = -1
    ERR_NOMEM = -2
    ERR_IO = -3
    ERR_FORMAT = -4
    ERR_UNSUPPORTED = -5
    ERR_MODEL = -6
    ERR_CONTEXT_FULL = -7
    ERR_TOKEN = -8
    ERR_BUFFER_TOO_SMALL = -9
    ERR_STATE = -10
    ERR_ABORTED = -11
    ERR_INTERNAL = -12
    ERR_NUMERIC = -13


class LogLevel(enum.IntEnum):
    ERROR = 0
    WARN = 1
    INFO = 2
    DEBUG = 3


class ExitMode(enum.IntEnum):
    NONE = 0
    FREE = 1
    VERIFY = 2
    AUTO = 3


class BmmRule(enum.IntEnum):
    GRID = 0
    CONTINUOUS = 1


class Finish(enum.IntEnum):
    NONE = 0
    EOS = 1
    LENGTH = 2
    STOP = 3
    CALLBACK = 4


# C enum name prefix of each IntEnum (FREE_ERR_IO <-> Status.ERR_IO), for the ABI test.
ENUM_PREFIXES = {Status: "FREE_", LogLevel: "FREE_LOG_", ExitMode: "FREE_EXIT_",
                 BmmRule: "FREE_BMM_RULE_", Finish: "FREE_FINISH_"}

# -- callbacks ----------------------------------------------------------------------------

# void (*free_log_fn)(void *user, free_log_level level, const char *message)
free_log_fn = CFUNCTYPE(None, c_void_p, c_int, c_char_p)
# int (*free_abort_fn)(void *user)
free_abort_fn = CFUNCTYPE(c_int, c_void_p)

# -- structs ------------------------------------------------------------------------------


class free_model_params(Structure):
    _fields_ = [
        ("size", c_size_t),
        ("vocab_only", c_int32),
        ("check_tensors", c_int32),
    ]


class free_ctx_params(Structure):
    _fields_ = [
        ("size", c_size_t),
        ("n_ctx", c_int32),
        ("n_threads", c_int32),
        ("n_batch", c_int32),
        ("temperature", c_float),
        ("top_k", c_int32),
        ("top_p", c_float),
        ("seed", c_uint64),
        ("exit_mode", c_int32),
        ("exit_layer", c_int32),
        ("threshold", c_float),
        ("max_queue", c_int32),
        ("adaptive", c_int32),
        ("zeta", c_float),
        ("threshold_min", c_float),
        ("threshold_max", c_float),
        ("bmm_rule", c_int32),
        ("bmm_min_per_class", c_int32),
        ("bmm_max_updates", c_int32),
        ("bmm_refit_every", c_int32),
        ("bmm_capacity", c_int32),
        ("calibration", c_char_p),
        ("abort_fn", free_abort_fn),
        ("abort_user", c_void_p),
        ("min_p", c_float),
        ("repeat_penalty", c_float),
        ("repeat_last_n", c_int32),
        ("frequency_penalty", c_float),
        ("presence_penalty", c_float),
        ("stop", POINTER(c_char_p)),
        ("n_stop", c_int32),
        ("context_shift", c_int32),
        ("n_keep", c_int32),
        ("min_agreement", c_float),
        ("agreement_stats", c_int32),
        ("calibration_file", c_char_p),
    ]


class free_step_info(Structure):
    _fields_ = [
        ("size", c_size_t),
        ("position", c_int32),
        ("layers", c_int32),
        ("early_exit", c_int32),
        ("confidence", c_float),
        ("threshold", c_float),
        ("is_eos", c_int32),
    ]


class free_stats(Structure):
    _fields_ = [
        ("size", c_size_t),
        ("exit_mode", c_int32),
        ("exit_layer", c_int32),
        ("n_layers", c_int32),
        ("n_threads", c_int32),
        ("threshold", c_float),
        ("prompt_tokens", c_uint64),
        ("tokens", c_uint64),
        ("shallow_exits", c_uint64),
        ("deep_passes", c_uint64),
        ("sync_rows", c_uint64),
        ("mean_sync_rows", c_double),
        ("drafts_rejected", c_uint64),
        ("avg_layers_per_token", c_double),
        ("agreement_checked", c_uint64),
        ("agreement_matched", c_uint64),
        ("prefill_ms", c_double),
        ("decode_ms", c_double),
        ("shallow_ms", c_double),
        ("deep_ms", c_double),
        ("head_ms", c_double),
        ("adaptive", c_int32),
        ("bmm_fits", c_int32),
        ("bmm_frozen", c_int32),
        ("bmm_samples_agree", c_uint64),
        ("bmm_samples_disagree", c_uint64),
        ("bmm_alpha_agree", c_double),
        ("bmm_beta_agree", c_double),
        ("bmm_alpha_disagree", c_double),
        ("bmm_beta_disagree", c_double),
        ("shallow_passes", c_uint64),
        ("layers_read_per_token", c_double),
        ("reused_tokens", c_uint64),
        ("exit_auto", c_int32),
        ("verify_full_depth", c_int32),
        ("verify_fallbacks", c_uint64),
        ("verify_full_tokens", c_uint64),
        ("verify_speedup", c_double),
        ("verify_timed", c_int32),
        ("verify_probing", c_int32),
        ("verify_windows", c_uint64),
        ("verify_probes", c_uint64),
        ("verify_token_ms", c_double),
        ("verify_full_ms", c_double),
        ("verify_shallow_ms", c_double),
        ("verify_deep_ms", c_double),
        ("verify_deep_rows", c_double),
    ]


class free_chat_message(Structure):
    _fields_ = [
        ("role", c_char_p),
        ("content", c_char_p),
    ]


# free_tokenize_ex flags.
TOKENIZE_ADD_SPECIAL = 1
TOKENIZE_PARSE_SPECIAL = 2

STRUCTS = (free_model_params, free_ctx_params, free_step_info, free_stats, free_chat_message)

# int (*free_token_fn)(void *user, int32_t token, const char *piece, size_t len,
#                      const free_step_info *info)
# piece is not NUL-terminated, so it is a char pointer read with ctypes.string_at.
free_token_fn = CFUNCTYPE(c_int, c_void_p, c_int32, POINTER(c_char), c_size_t,
                          POINTER(free_step_info))

# -- functions ----------------------------------------------------------------------------

# free_status is a C enum: returned and passed as int.
_status = c_int
_model_p = c_void_p
_ctx_p = c_void_p

# name: (restype, argtypes), in header order.
FUNCTIONS = {
    "free_strerror": (c_char_p, [c_int]),
    "free_last_error": (c_char_p, []),
    "free_version_string": (c_char_p, []),
    "free_version_number": (c_uint32, []),
    "free_log_set": (None, [free_log_fn, c_void_p, c_int]),
    "free_model_params_init": (_status, [POINTER(free_model_params), c_size_t]),
    "free_model_load": (_status, [c_char_p, POINTER(free_model_params),
                                  POINTER(_model_p)]),
    "free_model_destroy": (None, [_model_p]),
    "free_model_n_layers": (c_int32, [_model_p]),
    "free_model_exit_layer": (c_int32, [_model_p]),
    "free_model_n_vocab": (c_int32, [_model_p]),
    "free_model_n_embd": (c_int32, [_model_p]),
    "free_model_n_ctx_train": (c_int32, [_model_p]),
    "free_model_architecture": (c_char_p, [_model_p]),
    "free_model_n_params": (c_uint64, [_model_p]),
    "free_model_describe": (c_char_p, [_model_p]),
    "free_model_weight_bytes": (c_uint64, [_model_p, c_int32, c_int32]),
    "free_model_head_bytes": (c_uint64, [_model_p]),
    "free_token_bos": (c_int32, [_model_p]),
    "free_token_eos": (c_int32, [_model_p]),
    "free_tokenize": (_status, [_model_p, c_char_p, c_ssize_t, c_int, POINTER(c_int32),
                                c_size_t, POINTER(c_size_t)]),
    "free_tokenize_ex": (_status, [_model_p, c_char_p, c_ssize_t, c_uint32, POINTER(c_int32),
                                   c_size_t, POINTER(c_size_t)]),
    "free_token_is_eog": (c_int, [_model_p, c_int32]),
    "free_token_to_piece": (_status, [_model_p, c_int32, POINTER(c_char), c_size_t,
                                      POINTER(c_size_t)]),
    "free_detokenize": (_status, [_model_p, POINTER(c_int32), c_size_t, POINTER(c_char),
                                  c_size_t, POINTER(c_size_t)]),
    "free_chat_format": (_status, [_model_p, c_char_p, POINTER(free_chat_message), c_size_t,
                                   c_int, POINTER(c_char), c_size_t, POINTER(c_size_t)]),
    "free_model_chat_template": (c_char_p, [_model_p]),
    "free_ctx_params_init": (_status, [POINTER(free_ctx_params), c_size_t]),
    "free_ctx_create": (_status, [_model_p, POINTER(free_ctx_params), POINTER(_ctx_p)]),
    "free_ctx_destroy": (None, [_ctx_p]),
    "free_ctx_set_params": (_status, [_ctx_p, POINTER(free_ctx_params)]),
    "free_ctx_reset": (_status, [_ctx_p]),
    "free_ctx_truncate": (_status, [_ctx_p, c_int32]),
    "free_ctx_state_size": (_status, [_ctx_p, POINTER(c_size_t)]),
    "free_ctx_state_save": (_status, [_ctx_p, c_void_p, c_size_t, POINTER(c_size_t)]),
    "free_ctx_state_load": (_status, [_ctx_p, c_void_p, c_size_t]),
    "free_ctx_last_error": (c_char_p, [_ctx_p]),
    "free_ctx_n_past": (c_int32, [_ctx_p]),
    "free_ctx_n_ctx": (c_int32, [_ctx_p]),
    "free_ctx_get_params": (_status, [_ctx_p, POINTER(free_ctx_params)]),
    "free_ctx_token_text": (_status, [_ctx_p, c_int32, POINTER(c_char), c_size_t,
                                      POINTER(c_size_t)]),
    "free_prefill": (_status, [_ctx_p, POINTER(c_int32), c_size_t]),
    "free_eval": (_status, [_ctx_p, POINTER(c_int32), c_size_t, POINTER(c_float)]),
    "free_model_weight_type": (c_char_p, [_model_p]),
    "free_eval_exit": (_status, [_ctx_p, POINTER(c_int32), c_size_t, POINTER(c_float),
                                 POINTER(c_float), POINTER(c_float)]),
    "free_step": (_status, [_ctx_p, POINTER(c_int32), POINTER(free_step_info)]),
    "free_decode": (_status, [_ctx_p, c_char_p, c_ssize_t, c_int32, free_token_fn,
                              c_void_p]),
    "free_ctx_finish_reason": (c_int32, [_ctx_p]),
    "free_batch_step": (_status, [POINTER(_ctx_p), c_int32, POINTER(c_int32), POINTER(c_int),
                                  POINTER(free_step_info)]),
    "free_ctx_stats": (_status, [_ctx_p, POINTER(free_stats)]),
    "free_ctx_reset_stats": (_status, [_ctx_p]),
    "free_ctx_export_calibration": (_status, [_ctx_p, POINTER(c_char), c_size_t,
                                              POINTER(c_size_t)]),
}

# -- loading ------------------------------------------------------------------------------


class LibraryNotFound(OSError):
    """libfree's shared library could not be found or is not usable."""


def _pkg_config_libdir():
    """libdir of the installed libfree according to pkg-config (`free.pc`), or None."""
    exe = shutil.which("pkg-config")
    if not exe:
        return None
    try:
        res = subprocess.run([exe, "--variable=libdir", "free"], capture_output=True,
                             text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    libdir = res.stdout.strip()
    return libdir if res.returncode == 0 and libdir else None


def candidate_paths():
    """Where the library is looked for, in order: (description, path or soname)."""
    package_dir = pathlib.Path(__file__).resolve().parent
    dist_dir = package_dir.parent                       # bindings/python in a source tree
    out = []
    env = os.environ.get("LIBFREE_PATH")
    if env:
        out.append(("$LIBFREE_PATH", env))
    out.append(("next to the package", str(package_dir / SONAME)))
    build = os.environ.get("FREE_BUILD_DIR")
    if build:
        out.append(("$FREE_BUILD_DIR/lib", str(pathlib.Path(build) / "lib" / SONAME)))
    # Run from a source tree (not installed): its build directory.
    if (dist_dir / "pyproject.toml").exists() and (dist_dir / ".." / ".." / "meson.build").exists():
        out.append(("the source tree's build dir",
                    os.path.normpath(dist_dir / ".." / ".." / "build" / "lib" / SONAME)))
    libdir = _pkg_config_libdir()
    if libdir:
        out.append(("pkg-config's libdir for free", str(pathlib.Path(libdir) / SONAME)))
    # The same directory can be reached twice (the source tree is the development tree).
    seen = set()
    out = [c for c in out if not (c[1] in seen or seen.add(c[1]))]
    found = ctypes.util.find_library("free")
    if found:
        out.append(("ctypes.util.find_library('free')", found))
    out.append(("the system loader", SONAME))
    return out


def _declare(cdll, where):
    missing = []
    for name, (restype, argtypes) in FUNCTIONS.items():
        try:
            fn = getattr(cdll, name)
        except AttributeError:
            missing.append(name)
            continue
        fn.restype = restype
        fn.argtypes = argtypes
    if missing:
        raise LibraryNotFound(f"{where} is not a complete libfree: it lacks "
                              f"{len(missing)} of {len(FUNCTIONS)} functions "
                              f"({', '.join(missing[:6])}{', ...' if len(missing) > 6 else ''})")
    return cdll


def load(path=None):
    """Loads and declares the library: from `path` when given, else from the first of
    candidate_paths() that exists. Raises LibraryNotFound listing every place tried."""
    if path is not None:
        try:
            cdll = ctypes.CDLL(str(path))
        except OSError as e:
            raise LibraryNotFound(f"cannot load libfree from {path}: {e}") from None
        return _declare(cdll, str(path))

    tried = []
    for what, cand in candidate_paths():
        is_file = os.sep in cand
        if is_file and not os.path.exists(cand):
            tried.append(f"  {what}: {cand} (no such file)")
            if what == "$LIBFREE_PATH":
                # An explicit choice that does not exist must not silently fall through.
                break
            continue
        try:
            cdll = ctypes.CDLL(cand)
        except OSError as e:
            tried.append(f"  {what}: {cand} ({e})")
            if what == "$LIBFREE_PATH":
                break
            continue
        return _declare(cdll, cand)
    raise LibraryNotFound("cannot find libfree's shared library (" + SONAME + "); looked in:\n"
                          + "\n".join(tried)
                          + "\nBuild and install it (meson setup build && ninja -C build "
                            "install), or set LIBFREE_PATH to the .so file.")


_lib = None
_lib_lock = threading.Lock()


def lib():
    """The loaded library (loaded on first call)."""
    global _lib
    if _lib is None:
        with _lib_lock:
            if _lib is None:
                _lib = load()
    return _lib


def set_library(path):
    """Uses the library at `path` from now on (before any model is loaded)."""
    global _lib
    with _lib_lock:
        _lib = load(path)
    return _lib
