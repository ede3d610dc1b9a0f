"""Tests of the ctypes binding: ABI agreement with the C header, error mapping, and the
library's results against the NumPy reference and the C CLI.

    FREE_MODELS_DIR=/work/shared/models FREE_BUILD_DIR=/work/main/build \\
        /usr/bin/python3 -m pytest bindings/python/tests -v

Tests that need the shared library skip (with the reason) while it cannot be loaded.
"""

import ctypes
import gc
import os
import pathlib
import re
import shutil
import subprocess

import numpy as np
import pytest

from conftest import SOURCE_ROOT, model_file, ref_model
from refdata import read_ids_txt, read_logits_bin, read_report_reference

import libfree
from libfree import _ffi

STORIES = "stories260K/stories260K.gguf"
LLAMA22 = "free-llama-22M/free-llama-22M.gguf"
CODE22 = "free-code-22M/free-code-22M.gguf"
VOCAB = "vocab/ggml-vocab-llama-spm.gguf"
HEADER = SOURCE_ROOT / "include" / "free" / "free.h"


def build_dir():
    return pathlib.Path(os.environ.get("FREE_BUILD_DIR", pathlib.Path(__file__).resolve().parents[3] / "build"))


def _report(name, value):
    print(f"{name}: {value:.3g}")


@pytest.fixture(scope="session")
def lib():
    try:
        return libfree.load_library()
    except libfree.LibraryNotFound as e:
        pytest.skip(f"libfree is not usable yet: {e}")


@pytest.fixture(scope="session")
def stories(lib):
    with libfree.Model(model_file(STORIES)) as m:
        yield m


@pytest.fixture(scope="session")
def llama22(lib):
    with libfree.Model(model_file(LLAMA22)) as m:
        yield m


# -- ABI: the binding's structs and enums are the compiler's --------------------------------

def _strip_comments(text):
    return re.sub(r"/\*.*?\*/", " ", text, flags=re.S)


def header_struct_fields(text, name):
    """Field names of `typedef struct name { ... } name;` in declaration order."""
    m = re.search(r"typedef struct %s \{(.*?)\} %s;" % (name, name), text, re.S)
    assert m, f"struct {name} not found in free.h"
    fields = []
    for decl in m.group(1).split(";"):
        decl = " ".join(decl.split())
        if not decl:
            continue
        # "double a, b, c" / "const char *calibration" / "free_abort_fn abort_fn"
        first, *rest = decl.split(",")
        fields.append(first.split()[-1].lstrip("*"))
        fields.extend(r.strip().lstrip("*") for r in rest)
    return fields


def header_enum_constants(text, name):
    m = re.search(r"typedef enum %s \{(.*?)\} %s;" % (name, name), text, re.S)
    assert m, f"enum {name} not found in free.h"
    return re.findall(r"\b(FREE_[A-Z0-9_]+)\s*=", m.group(1))


ENUMS = {"free_status": _ffi.Status, "free_log_level": _ffi.LogLevel,
         "free_exit_mode": _ffi.ExitMode, "free_bmm_rule": _ffi.BmmRule,
         "free_finish": _ffi.Finish}


def _c_name(enum_cls, member):
    return _ffi.ENUM_PREFIXES[enum_cls] + member.name


@pytest.fixture(scope="module")
def c_layout(tmp_path_factory):
    """sizeof / offsetof / enum values as the C compiler sees free.h."""
    cc = shutil.which(os.environ.get("CC", "cc"))
    if cc is None:
        pytest.skip("no C compiler (cc) to compare the ABI with")
    version_h = build_dir() / "include" / "free" / "version.h"
    if not version_h.exists():
        pytest.skip(f"{version_h} not found (set FREE_BUILD_DIR to a configured build)")
    lines = ["#include <stddef.h>", "#include <stdio.h>", "#include <free/free.h>",
             "int main(void) {"]
    for st in _ffi.STRUCTS:
        n = st.__name__
        lines.append(f'    printf("sizeof {n} %zu\\n", sizeof({n}));')
        lines.append(f'    printf("alignof {n} %zu\\n", _Alignof({n}));')
        for field, _ in st._fields_:
            lines.append(f'    printf("offsetof {n}.{field} %zu\\n", offsetof({n}, {field}));')
            lines.append(f'    printf("fieldsize {n}.{field} %zu\\n", '
                         f'sizeof((({n} *)0)->{field}));')
    for cname, enum_cls in ENUMS.items():
        lines.append(f'    printf("sizeof {cname} %zu\\n", sizeof({cname}));')
        for member in enum_cls:
            c = _c_name(enum_cls, member)
            lines.append(f'    printf("enum {c} %d\\n", (int){c});')
    lines += ["    return 0;", "}"]
    d = tmp_path_factory.mktemp("abi")
    src, exe = d / "abi.c", d / "abi"
    src.write_text("\n".join(lines) + "\n")
    cmd = [cc, "-std=c11", "-Wall", "-Werror", f"-I{SOURCE_ROOT / 'include'}",
           f"-I{build_dir() / 'include'}", str(src), "-o", str(exe)]
    res = subprocess.run(cmd, capture_output=True, text=True)
    assert res.returncode == 0, f"compiling the ABI probe failed:\n{res.stderr}"
    out = subprocess.run([str(exe)], capture_output=True, text=True, check=True).stdout
    values = {}
    for line in out.splitlines():
        kind, name, value = line.split()
        values[(kind, name)] = int(value)
    return values


@pytest.mark.parametrize("struct", _ffi.STRUCTS, ids=lambda s: s.__name__)
def test_struct_fields_follow_the_header(struct):
    text = _strip_comments(HEADER.read_text())
    assert [f for f, _ in struct._fields_] == header_struct_fields(text, struct.__name__)


@pytest.mark.parametrize("struct", _ffi.STRUCTS, ids=lambda s: s.__name__)
def test_struct_layout_equals_c(c_layout, struct):
    n = struct.__name__
    assert ctypes.sizeof(struct) == c_layout[("sizeof", n)]
    assert ctypes.alignment(struct) == c_layout[("alignof", n)]
    for field, ctype in struct._fields_:
        assert getattr(struct, field).offset == c_layout[("offsetof", f"{n}.{field}")], field
        assert ctypes.sizeof(ctype) == c_layout[("fieldsize", f"{n}.{field}")], field


@pytest.mark.parametrize("cname", sorted(ENUMS))
def test_enum_values_equal_c(c_layout, cname):
    enum_cls = ENUMS[cname]
    text = _strip_comments(HEADER.read_text())
    assert sorted(_c_name(enum_cls, m) for m in enum_cls) == \
        sorted(header_enum_constants(text, cname))
    assert c_layout[("sizeof", cname)] == ctypes.sizeof(ctypes.c_int)
    for member in enum_cls:
        assert int(member) == c_layout[("enum", _c_name(enum_cls, member))], member


def test_every_header_function_is_declared():
    text = _strip_comments(HEADER.read_text())
    declared = set(re.findall(r"FREE_API[^;]*?\b(free_[a-z0-9_]+)\s*\(", text))
    assert declared == set(_ffi.FUNCTIONS)


def test_exports_equal_the_binding(lib):
    # The version script and the binding list the same functions.
    mapfile = SOURCE_ROOT / "lib" / "libfree.map"
    if not mapfile.exists():
        pytest.skip("lib/libfree.map not found")
    exported = set(re.findall(r"^\s*(free_[a-z0-9_]+);", mapfile.read_text(), re.M))
    assert exported == set(_ffi.FUNCTIONS)


# -- library basics ----------------------------------------------------------------------

def test_version_agrees(lib):
    text = (build_dir() / "include" / "free" / "version.h").read_text()
    want = re.search(r'#define FREE_VERSION_STRING "([^"]+)"', text).group(1)
    assert libfree.version() == want
    major, minor, patch = (int(x) for x in want.split("."))
    assert libfree.version_number() == major * 10000 + minor * 100 + patch
    assert libfree.__version__ == want


def test_strerror_covers_every_status(lib):
    texts = {s: libfree.strerror(s) for s in libfree.Status}
    assert all(texts.values())
    assert len(set(texts.values())) == len(texts)


def test_library_not_found_lists_where_it_looked(monkeypatch, tmp_path):
    monkeypatch.setenv("LIBFREE_PATH", str(tmp_path / "nope.so"))
    with pytest.raises(libfree.LibraryNotFound, match="nope.so"):
        _ffi.load()


# -- errors ------------------------------------------------------------------------------

def test_missing_file_raises(lib, tmp_path):
    path = tmp_path / "does-not-exist.gguf"
    with pytest.raises(FileNotFoundError) as e:
        libfree.Model(path)
    assert e.value.filename == str(path)
    assert "does-not-exist.gguf" in str(e.value)
    with pytest.raises(IsADirectoryError):
        libfree.Model(tmp_path)


def test_malformed_file_raises(lib, tmp_path):
    path = tmp_path / "junk.gguf"
    path.write_bytes(b"this is not a model file at all" * 4)
    with pytest.raises(libfree.FreeError) as e:
        libfree.Model(path)
    assert e.value.status == libfree.Status.ERR_FORMAT
    assert e.value.message


def test_truncated_file_raises(lib, tmp_path):
    data = model_file(STORIES).read_bytes()
    path = tmp_path / "truncated.gguf"
    path.write_bytes(data[:len(data) // 2])
    with pytest.raises(libfree.FreeError) as e:
        libfree.Model(path)
    assert e.value.status == libfree.Status.ERR_FORMAT
    assert e.value.message


def test_bad_token_id_raises(stories):
    with stories.context() as ctx:
        for bad in (stories.n_vocab, -1):
            with pytest.raises(libfree.FreeError) as e:
                ctx.eval([1, bad])
            assert e.value.status == libfree.Status.ERR_TOKEN
            assert str(bad) in e.value.message
    with pytest.raises(libfree.FreeError) as e:
        stories.token_to_piece(stories.n_vocab)
    assert e.value.status == libfree.Status.ERR_TOKEN
    with pytest.raises(libfree.FreeError) as e:
        stories.detokenize([1, 2**40])
    assert e.value.status == libfree.Status.ERR_TOKEN


def test_context_overflow_raises(stories):
    with stories.context(n_ctx=16) as ctx:
        assert ctx.n_ctx == 16
        with pytest.raises(libfree.FreeError) as e:
            ctx.eval([1] + [261] * 16)
        assert e.value.status == libfree.Status.ERR_CONTEXT_FULL
        assert e.value.message
        ctx.reset()
        with pytest.raises(libfree.FreeError) as e:
            ctx.generate("Once upon a time", max_tokens=100)
        assert e.value.status == libfree.Status.ERR_CONTEXT_FULL
        assert e.value.text                       # what was produced before it filled up


def test_step_before_prefill_raises(stories):
    with stories.context() as ctx:
        with pytest.raises(libfree.FreeError) as e:
            ctx.step()
        assert e.value.status == libfree.Status.ERR_STATE


def test_bad_params_raise(stories):
    with pytest.raises(TypeError):
        stories.context(no_such_param=1)
    with pytest.raises(ValueError):
        stories.context(exit_mode="sometimes")
    with stories.context() as ctx:
        with pytest.raises(ValueError):
            ctx.set_params(n_ctx=8)


def test_abort_callback(stories):
    calls = []

    def abort():
        calls.append(1)
        return len(calls) >= 2          # let the first batch through, then stop

    ids = [1] + [261] * 40
    with stories.context(n_batch=8, abort_fn=abort) as ctx:
        with pytest.raises(libfree.FreeError) as e:
            ctx.prefill(ids)
        assert e.value.status == libfree.Status.ERR_ABORTED
        assert calls
        ctx.set_params(abort_fn=None)
        ctx.reset()
        ctx.prefill(ids)
        assert ctx.n_past == len(ids)


def test_callback_exception_propagates(stories):
    class Boom(Exception):
        pass

    def on_token(piece):
        raise Boom()

    with stories.context() as ctx:
        with pytest.raises(Boom):
            ctx.generate("Once upon a time", max_tokens=8, on_token=on_token)
        ctx.reset()
        assert ctx.generate("Once upon a time", max_tokens=4)


def test_closed_objects_raise(lib):
    m = libfree.Model(model_file(STORIES))
    ctx = m.context()
    m.close()                      # closes the context first
    assert ctx.closed and m.closed
    with pytest.raises(ValueError):
        ctx.eval([1])
    with pytest.raises(ValueError):
        m.tokenize("x")
    m.close()
    ctx.close()                    # closing twice is harmless


def test_context_keeps_model_alive(lib):
    ctx = libfree.Model(model_file(STORIES)).context()
    gc.collect()
    assert ctx.eval([1, 403]).shape == (2, 512)
    ctx.close()


# -- tokens ------------------------------------------------------------------------------

def test_model_queries(stories, llama22):
    assert (stories.n_layers, stories.n_vocab, stories.n_embd) == (5, 512, 64)
    assert stories.n_ctx_train == 2048 and stories.exit_layer == 0
    assert stories.architecture == "llama"
    assert (stories.bos, stories.eos) == (1, 2)
    assert (llama22.n_layers, llama22.exit_layer, llama22.n_vocab) == (12, 3, 4096)
    assert llama22.n_params > 20_000_000
    assert "llama" in llama22.description


def test_tokenizer_vectors(lib):
    inp = model_file(VOCAB.replace(".gguf", ".gguf.inp")).read_text(encoding="utf-8")
    out = model_file(VOCAB.replace(".gguf", ".gguf.out")).read_text(encoding="utf-8")
    texts = inp.split("\n__ggml_vocab_test__\n")
    if texts[-1] == "":
        texts.pop()
    expected = [[int(t) for t in line.split()] for line in out.split("\n")[:len(texts)]]
    with libfree.Model(model_file(VOCAB), vocab_only=True) as m:
        for text, ids in zip(texts, expected):
            assert m.tokenize(text, add_bos=False) == ids, repr(text)


def test_tokenize_roundtrip(llama22):
    text = "It is a truth universally acknowledged, that"
    ref = read_report_reference(model_file("free-llama-22M/report.json"))
    ids = llama22.tokenize(text)
    assert ids == ref["prompt_ids"]
    assert llama22.tokenize(text, add_bos=False) == ids[1:]
    assert llama22.detokenize(ids) == text
    assert llama22.tokenize(text.encode()) == ids
    assert b"".join(llama22.token_to_piece(t) for t in ids[1:]) == b" " + text.encode()
    assert llama22.tokenize("") == [llama22.bos]
    # A long text exercises the buffer-growth path.
    long_text = "é 日本 " * 500
    assert llama22.detokenize(llama22.tokenize(long_text)) == long_text


# -- numerics: the library against the NumPy oracle --------------------------------------

def _compare(name, got, want):
    got = np.asarray(got, dtype=np.float64)
    abs_err = np.abs(got - want).max()
    rel = abs_err / np.abs(want).max()
    _report(f"{name} max abs diff", abs_err)
    _report(f"{name} max abs diff / max |logit|", rel)
    assert got.shape == want.shape
    assert rel < 1e-4
    assert (got.argmax(axis=1) == want.argmax(axis=1)).all()


def test_eval_matches_numpy_stories(stories):
    _, ids = read_ids_txt(model_file("stories260K/reference/once_upon_a_time.n64.ids.txt"))
    want = ref_model(STORIES).forward(ids)
    with stories.context() as ctx:
        _compare("stories260K eval", ctx.eval(ids), want)
        # In pieces (a KV cache that continues) it must be the same computation.
        ctx.reset()
        parts = [ctx.eval(ids[:1]), ctx.eval(ids[1:7]), ctx.eval(ids[7:])]
        _compare("stories260K eval in parts", np.concatenate(parts), want)
        assert ctx.n_past == len(ids)


def test_eval_matches_numpy_llama22m(llama22):
    ids, _ = read_logits_bin(model_file("free-llama-22M/reference/prompt1.logits.bin"))
    ref = ref_model(LLAMA22)
    report = read_report_reference(model_file("free-llama-22M/report.json"))
    long_ids = report["greedy_deep_ids"]
    with llama22.context() as ctx:
        _compare("free-llama-22M eval", ctx.eval(ids), ref.forward(ids))
        ctx.reset()
        _compare("free-llama-22M eval (63 tokens)", ctx.eval(long_ids), ref.forward(long_ids))


def test_eval_matches_numpy_code22m(lib):
    ids, _ = read_logits_bin(model_file("free-code-22M/reference/prompt1.logits.bin"))
    with libfree.Model(model_file(CODE22)) as m, m.context() as ctx:
        _compare("free-code-22M eval", ctx.eval(ids), ref_model(CODE22).forward(ids))


def test_greedy_matches_llama2c(stories):
    prompt, ids = read_ids_txt(model_file("stories260K/reference/once_upon_a_time.n64.ids.txt"))
    tokens = []
    with stories.context() as ctx:
        text = ctx.generate("Once upon a time", max_tokens=len(ids) - len(prompt),
                            on_token=lambda p: tokens.append(p.token))
    assert stories.tokenize("Once upon a time") == prompt
    assert tokens == ids[len(prompt):]
    assert text == stories.detokenize(prompt + tokens)[len("Once upon a time"):]


# VERIFY with threshold 0 and an unbounded queue drafts up to the end of the context
# before each check (minutes on this model), hence the queue bound there.
@pytest.mark.parametrize("mode,threshold,max_queue", [
    ("none", None, 0), ("verify", 0.0, 8), ("verify", 0.5, 0), ("free", 1.0, 0)])
def test_greedy_matches_report_llama22m(llama22, mode, threshold, max_queue):
    # Full depth, lossless verification at any threshold, and FREE with an unreachable
    # threshold all give the full model's greedy tokens.
    ref = read_report_reference(model_file("free-llama-22M/report.json"))
    n_prompt = len(ref["prompt_ids"])
    want = ref["greedy_deep_ids"][n_prompt:]
    tokens = []
    with llama22.context(max_queue=max_queue, exit_mode=mode, threshold=threshold) as ctx:
        text = ctx.generate(ref["prompt"], max_tokens=len(want),
                            on_token=lambda p: tokens.append(p.token))
        stats = ctx.stats()
    assert tokens == want
    assert ref["prompt"] + text == ref["greedy_deep_text"]
    assert stats.tokens == len(want)
    assert stats.prompt_tokens == n_prompt
    assert stats.exit_mode is libfree.ExitMode[mode.upper()]


def test_free_mode_exits_early(llama22):
    ref = read_report_reference(model_file("free-llama-22M/report.json"))
    infos = []
    with llama22.context(exit_mode="free") as ctx:
        ctx.generate(ref["prompt"], max_tokens=48, exit_mode="free", threshold=0.0,
                     on_token=lambda p: infos.append(p.info))
        stats = ctx.stats()
    assert stats.shallow_exits == sum(i.early_exit for i in infos) > 0
    assert stats.exit_layer == 3
    assert all(i.layers in (3, 12) for i in infos)
    assert all(i.layers == 3 for i in infos if i.early_exit)
    assert stats.avg_layers_per_token < 12


def test_sampling_is_seeded(llama22):
    kw = dict(max_tokens=24, temperature=0.9, top_k=40, top_p=0.95)
    with llama22.context() as ctx:
        a = ctx.generate("In the beginning", seed=7, **kw)
        ctx.reset()
        b = ctx.generate("In the beginning", seed=7, **kw)
        ctx.reset()
        c = ctx.generate("In the beginning", seed=8, **kw)
    assert a == b
    assert a != c


# -- streaming ---------------------------------------------------------------------------

def test_stream_equals_generate(llama22):
    with llama22.context() as ctx:
        text = ctx.generate("In the beginning", max_tokens=40)
        ctx.reset()
        pieces = list(ctx.stream("In the beginning", max_tokens=40))
    assert "".join(pieces) == text
    assert all(pieces)


def test_stream_stops_when_left(llama22):
    with llama22.context() as ctx:
        it = ctx.stream("In the beginning", max_tokens=40, details=True)
        first = [next(it) for _ in range(5)]
        with pytest.raises(libfree.FreeError):
            ctx.n_past                    # busy while the stream is open
        it.close()
        n_prompt = len(llama22.tokenize("In the beginning"))
        assert [p.info.position for p in first] == list(range(n_prompt, n_prompt + 5))
        assert ctx.stats().tokens == 5
        assert ctx.n_past == n_prompt + 5
        # The context is usable again and continues the same text.
        more = ctx.generate(None, max_tokens=3, reset=False)
        assert isinstance(more, str)
        assert ctx.stats().tokens == 8


def test_stream_closed_with_context(llama22):
    ctx = llama22.context()
    it = ctx.stream("In the beginning", max_tokens=40)
    next(it)
    ctx.close()                            # cancels the stream's worker first
    assert ctx.closed


# -- calibration, stats, params ----------------------------------------------------------

def test_calibration_roundtrip(llama22):
    with llama22.context(exit_mode="free", adaptive=True) as ctx:
        ctx.generate("The President shall", max_tokens=48, exit_mode="free", adaptive=True)
        calib = ctx.export_calibration()
        threshold = ctx.stats().threshold
    assert isinstance(calib, str) and calib
    with llama22.context(exit_mode="free", adaptive=True, calibration=calib) as ctx:
        assert ctx.stats().threshold == pytest.approx(threshold)
        # The fitted state comes back; the raw samples are not part of the text's state.
        def state(text):
            return [ln for ln in text.splitlines() if not ln.startswith("samples ")]
        assert state(ctx.export_calibration()) == state(calib)
    with pytest.raises(libfree.FreeError) as e:
        llama22.context(exit_mode="free", adaptive=True, calibration="not a calibration")
    assert e.value.status == libfree.Status.ERR_FORMAT
    assert "calibration" in e.value.message


def test_stats_dataclass_mirrors_c():
    names = [f for f, _ in _ffi.free_stats._fields_ if f != "size"]
    assert [f.name for f in libfree.dataclasses.fields(libfree.Stats)] == names


def test_log_handler(lib, tmp_path):
    seen = []
    libfree.set_log_handler(lambda level, msg: seen.append((level, msg)),
                            libfree.LogLevel.DEBUG)
    try:
        with libfree.Model(model_file(STORIES)) as m, m.context() as ctx:
            ctx.generate("Once", max_tokens=2)
    finally:
        libfree.set_log_handler(None)
    assert all(isinstance(lv, libfree.LogLevel) and isinstance(msg, str) for lv, msg in seen)


# -- the C CLI ---------------------------------------------------------------------------

@pytest.mark.parametrize("rel,prompt,n,exit_mode,threshold", [
    (STORIES, "Once upon a time", 40, "none", None),
    (LLAMA22, "It is a truth universally acknowledged, that", 32, "none", None),
    (LLAMA22, "In the beginning", 32, "none", None),
    (LLAMA22, "The President shall", 32, "free", 0.4),
    (LLAMA22, "The President shall", 32, "verify", 0.4),
])
def test_generate_equals_cli(lib, rel, prompt, n, exit_mode, threshold):
    cli = build_dir() / "examples" / "free-cli"
    if not cli.exists():
        pytest.skip(f"{cli} not built yet")
    path = model_file(rel)
    cmd = [str(cli), "-m", str(path), "-p", prompt, "-n", str(n), "--exit", exit_mode]
    if threshold is not None:
        cmd += ["--threshold", str(threshold)]
    res = subprocess.run(cmd, capture_output=True, timeout=120)
    assert res.returncode == 0, res.stderr.decode(errors="replace")
    with libfree.Model(path) as m, m.context() as ctx:
        text = ctx.generate(prompt, max_tokens=n, exit_mode=exit_mode, threshold=threshold)
    assert res.stdout.decode("utf-8", errors="replace").rstrip("\n") == \
        (prompt + text).rstrip("\n")
