"""free-train's PyTorch forward pass against libfree's logits (free_eval through the
Python binding), on stories260K and on random llama models written by free-train's own
GGUF writer; and the GGUF reader / writer / dequantizers."""

import json

import numpy as np
import pytest

from conftest import libfree, model_file, needs_torch

PROMPTS = ["Once upon a time, there was a little girl named Lily.",
           "Tom and Sue went to the park. They saw a big dog",
           "The sun was hot. \"Can we go to the sea?\" asked Ben."]
STORIES = "stories260K/stories260K.gguf"


def compare(gguf_path, prompts, exit_layers=(None,)):
    """The largest relative error between the PyTorch forward and libfree's logits
    (full depth; and the exit head, free_eval_exit, for each exit layer given)."""
    import binding
    import model_io
    from torch_model import Llama
    lf = libfree()
    _, hp, weights, _, rope_freqs = model_io.load_gguf(gguf_path)
    model = Llama(hp, weights, rope_freqs)
    with lf.Model(str(gguf_path), vocab_only=True) as voc:
        ids = [voc.tokenize(p) for p in prompts]
    err = max(binding.compare(model, gguf_path, ids, exit_layer=e) for e in exit_layers)
    return err, ids


@needs_torch
def test_stories260k_logits_equal_libfree():
    err, ids = compare(model_file(STORIES), PROMPTS, exit_layers=(None, 1, 3))
    assert min(len(i) for i in ids) >= 10
    assert err < 1e-4, f"relative error {err:.3g}"


@needs_torch
def test_stories260k_logits_equal_llama2c():
    """The PyTorch pass against llama2.c's logits (independent of libfree)."""
    import binding
    import model_io
    from torch_model import Llama
    path = model_file(STORIES)
    ref_dir = path.parent / "reference"
    line = (ref_dir / "once_upon_a_time.n64.ids.txt").read_text().split("all_ids")[1]
    ids = [int(t) for t in line.split(":", 1)[1].split()]
    f = ref_dir / "once_upon_a_time.logits_pos0-7.f32"
    if not f.exists():
        pytest.skip(f"{f} not found")
    ref = np.fromfile(f, dtype="<f4").reshape(8, -1)
    _, hp, weights, _, _ = model_io.load_gguf(path)
    logits = binding.torch_logits(Llama(hp, weights), ids[:8])
    assert binding.relative_error(logits, ref) < 1e-4


def write_random_model(tmp_path, name, **shape):
    """A random model GGUF (stories260K's tokenizer unless `vocab` names another), written
    with free-train's writer; `rope_freqs` adds rope_freqs.weight, `scaling` a linear
    RoPE scaling factor."""
    import dequant
    import gguf_io
    import model_io
    cfg = {"n_embd": 48, "n_layers": 3, "n_head": 6, "n_head_kv": 2, "n_ff": 64,
           "context_length": 256, "tokenizer": str(model_file(STORIES))}
    cfg.update(shape)
    if "vocab" in cfg:
        cfg["tokenizer"] = str(model_file(cfg.pop("vocab")))
    out_type = dequant.F16 if cfg.pop("type", "f16") == "f16" else dequant.F32
    rope_freqs = cfg.pop("rope_freqs", False)
    scaling = cfg.pop("scaling", None)
    cfg_path = tmp_path / f"{name}.json"
    cfg_path.write_text(json.dumps(cfg))
    cfg, hp, tok = model_io.load_config(cfg_path)
    rng = np.random.default_rng(7)
    tensors = []
    for n, w in model_io.random_weights(hp, rng).items():
        # Weights large enough that every layer matters (not near-uniform logits).
        if n.endswith(".bias"):
            w = 0.5 * rng.standard_normal(w.shape)
        elif w.ndim == 2:
            w = w * 10.0
        else:
            w = 1.0 + 0.2 * rng.standard_normal(w.shape)
        tensors.append(gguf_io.tensor_from_array(n, w, out_type if w.ndim == 2
                                                 else dequant.F32))
    kv = model_io._config_kv(cfg, hp, tok)
    if rope_freqs:
        rd = hp.rope_dim or hp.head_dim
        factors = np.linspace(1.0, 8.0, rd // 2).astype(np.float32)
        tensors.append(gguf_io.tensor_from_array("rope_freqs.weight", factors, dequant.F32))
    if scaling:
        kv += [(f"{hp.arch}.rope.scaling.type", gguf_io.Value(gguf_io.STRING, "linear")),
               (f"{hp.arch}.rope.scaling.factor", gguf_io.Value(gguf_io.FLOAT32, scaling))]
    kv += model_io.free_kv({"free.exit_layer": 1})
    path = tmp_path / f"{name}.gguf"
    gguf_io.write(path, kv, tensors)
    return path


RANDOM_LLAMAS = {
    # GQA, partial RoPE, tied output, F16 matrices, a large RoPE base
    "gqa-partial-rope-tied-f16": dict(rope_dim=4, rope_base=500000.0, eps=1e-6,
                                      tied=True),
    # MHA, full RoPE, separate output, F32 matrices
    "mha-f32": dict(n_head=4, n_head_kv=4, n_embd=32, n_layers=2, type="f32"),
    # Llama 3's shape of vocabulary: byte-level BPE (128,256 tokens), RoPE base 500000,
    # rope_freqs.weight (Llama 3.1) and linear RoPE scaling
    "llama3-bpe-vocab": dict(vocab="vocab/ggml-vocab-llama-bpe.gguf", n_embd=32,
                             n_head=4, n_head_kv=1, rope_base=500000.0, rope_freqs=True,
                             scaling=4.0),
    # Qwen2: Q/K/V biases, NEOX RoPE, tied output, its own BPE vocabulary
    "qwen2": dict(architecture="qwen2", vocab="vocab/ggml-vocab-qwen2.gguf", n_embd=32,
                  n_head=4, n_head_kv=2, tied=True, rope_base=1000000.0),
    # Phi-3: fused QKV and gate/up, NEOX RoPE with a partial rotary dimension
    "phi3": dict(architecture="phi3", rope_dim=4, rope_freqs=True),
}


@needs_torch
@pytest.mark.parametrize("name", sorted(RANDOM_LLAMAS))
def test_random_llama_logits_equal_libfree(tmp_path, name):
    path = write_random_model(tmp_path, name, **RANDOM_LLAMAS[name])
    lf = libfree()
    with lf.Model(str(path)) as m:      # libfree accepts the file free-train wrote
        assert m.exit_layer == 1
    n_layers = RANDOM_LLAMAS[name].get("n_layers", 3)
    err, _ = compare(path, PROMPTS, exit_layers=tuple(range(1, n_layers)))
    assert err < 1e-4, f"relative error {err:.3g}"


def test_gguf_rewrite_keeps_keys_and_tensors(tmp_path):
    """Reading stories260K and writing it back (F32) keeps every key, type, order and
    tensor byte; free.* keys are added."""
    import dequant
    import gguf_io
    src = gguf_io.Reader(model_file(STORIES))
    kv = list(src.kv.items()) + [("free.exit_layer", gguf_io.Value(gguf_io.UINT32, 2))]
    tensors = [gguf_io.tensor_from_array(n, src.tensor(n), dequant.F32) for n in src.tensors]
    out = tmp_path / "copy.gguf"
    gguf_io.write(out, kv, tensors)
    back = gguf_io.Reader(out)
    assert list(back.kv) == list(src.kv) + ["free.exit_layer"]
    for k, v in src.kv.items():
        assert (back.kv[k].vtype, back.kv[k].value, back.kv[k].etype) == \
            (v.vtype, v.value, v.etype), k
    assert list(back.tensors) == list(src.tensors)
    for n in src.tensors:
        assert back.tensors[n].ne == src.tensors[n].ne
        assert bytes(back.raw(n)) == bytes(src.raw(n)), n


QUANT_FILES = ["free-llama-22M-q8_0.gguf", "quant/free-llama-22M-q4_0.gguf",
               "quant/free-llama-22M-q4_k_m.gguf", "quant/free-llama-22M-q5_k_m.gguf"]
# Largest relative RMS error of a dequantized tensor against the F16 original, per type.
QUANT_RMS = {"Q8_0": 0.01, "Q6_K": 0.03, "Q5_0": 0.06, "Q5_1": 0.06, "Q5_K": 0.06,
             "Q4_0": 0.12, "Q4_K": 0.12}


def test_dequantizers_against_f16_original():
    """One tensor of every quantized type in llama.cpp's quantized copies of
    free-llama-22M, dequantized, is close to the F16 original (a wrong block layout would
    be off by about 100%)."""
    import dequant
    import gguf_io
    ref = gguf_io.Reader(model_file("free-llama-22M/free-llama-22M.gguf"))
    seen = set()
    for f in QUANT_FILES:
        r = gguf_io.Reader(model_file("free-llama-22M/" + f))
        for name, t in r.tensors.items():
            tname = dequant.type_name(t.type)
            if tname not in QUANT_RMS or tname in seen:
                continue
            seen.add(tname)
            a, b = r.tensor(name), ref.tensor(name)
            rms = float(np.sqrt(((a - b) ** 2).mean() / (b ** 2).mean()))
            assert rms < QUANT_RMS[tname], (f, name, tname, rms)
    assert seen == set(QUANT_RMS)


def test_reader_refuses_bad_files(tmp_path):
    import gguf_io
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF\x03\x00\x00\x00" + b"\xff" * 16)
    with pytest.raises(gguf_io.GGUFError, match="implausible|past the end"):
        gguf_io.Reader(bad)
    bad.write_bytes(b"NOPE" + b"\0" * 20)
    with pytest.raises(gguf_io.GGUFError, match="not a GGUF file"):
        gguf_io.Reader(bad)
