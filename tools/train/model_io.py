"""From a GGUF file (or a JSON shape) to torch_model.Llama, and back to GGUF.

The output keeps the source's metadata keys in their order and types (the tokenizer
included), its tensor order and names; matrices are written F16 or F32, vectors F32.
free.* keys are replaced by the new ones.
"""

import json

import numpy as np

import dequant
import gguf_io
from gguf_io import ARRAY, FLOAT32, STRING, UINT32, UINT64, Value
from torch_model import HParams, tensor_shapes

SUPPORTED_ARCHS = ("llama", "qwen2", "phi3")
# Biases each architecture reads (libfree's lib/model_arch.c): llama's are optional.
_LLAMA_BIASES = ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up",
                 "ffn_down")


class ModelError(ValueError):
    pass


def hparams_from_gguf(r):
    arch = r.get("general.architecture")
    if arch is None:
        raise ModelError(f"{r.path}: no general.architecture key")
    if arch not in SUPPORTED_ARCHS:
        raise ModelError(f"{r.path}: architecture {arch!r} is not supported by free-train "
                         f"(supported: {', '.join(SUPPORTED_ARCHS)})")

    def key(name, default=None):
        v = r.get(f"{arch}.{name}", default)
        if v is None:
            raise ModelError(f"{r.path}: missing key {arch}.{name}")
        return v

    if "token_embd.weight" not in r.tensors:
        raise ModelError(f"{r.path}: no token_embd.weight tensor")
    n_embd = int(key("embedding_length"))
    n_head = int(key("attention.head_count"))
    for k in ("attention.key_length", "attention.value_length"):
        if r.get(f"{arch}.{k}") not in (None, n_embd // n_head):
            raise ModelError(f"{r.path}: {arch}.{k} = {r.get(f'{arch}.{k}')} differs from "
                             f"the head size {n_embd // n_head}: not supported")
    scale = 1.0
    stype = r.get(f"{arch}.rope.scaling.type", "linear")
    factor = float(r.get(f"{arch}.rope.scaling.factor", 0.0) or 0.0)
    if stype not in ("none", "linear"):
        raise ModelError(f"{r.path}: {arch}.rope.scaling.type {stype!r} is not supported "
                         f"(none or linear)")
    if stype == "linear" and factor > 0:
        scale = factor
    for t in ("rope_factors_long.weight", "rope_factors_short.weight"):
        if t in r.tensors:
            raise ModelError(f"{r.path}: {t}: LongRoPE is not supported")
    has = r.tensors.__contains__
    fused_qkv = arch == "phi3" and not has("blk.0.attn_q.weight")
    fused_ffn = arch == "phi3" and not has("blk.0.ffn_gate.weight")
    if arch == "qwen2":
        biases = ("attn_q", "attn_k", "attn_v")
    elif arch == "llama":
        biases = tuple(b for b in _LLAMA_BIASES if has(f"blk.0.{b}.bias"))
    else:
        biases = ()
    hp = HParams(
        arch=arch, rope_neox=arch in ("qwen2", "phi3"), rope_scale=scale,
        fused_qkv=fused_qkv, fused_ffn=fused_ffn, biases=biases,
        n_embd=n_embd, n_layers=int(key("block_count")), n_head=n_head,
        n_head_kv=int(key("attention.head_count_kv", n_head)),
        n_ff=int(key("feed_forward_length")),
        n_vocab=int(r.tensors["token_embd.weight"].ne[1]),
        eps=float(key("attention.layer_norm_rms_epsilon", 1e-5)),
        rope_base=float(key("rope.freq_base", 10000.0)),
        rope_dim=int(key("rope.dimension_count", 0)),
        n_ctx=int(key("context_length", 2048)),
        tied="output.weight" not in r.tensors)
    try:
        hp.check()
    except ValueError as e:
        raise ModelError(f"{r.path}: {e}") from None
    return hp


def load_gguf(path):
    """(reader, hparams, weights dict name -> float32 array, quantized?, rope_freqs
    factors or None). rope_freqs.weight is a constant, not trained (copied to the
    output as it was)."""
    try:
        r = gguf_io.Reader(path)
    except gguf_io.GGUFError as e:
        raise ModelError(str(e)) from None
    hp = hparams_from_gguf(r)
    weights = {}
    quantized = False
    for name, shape in tensor_shapes(hp).items():
        if name not in r.tensors:
            raise ModelError(f"{path}: missing tensor {name}")
        t = r.tensors[name]
        if t.shape != shape:
            raise ModelError(f"{path}: tensor {name} has shape {t.shape}, expected {shape}")
        quantized |= t.type not in (dequant.F32, dequant.F16, dequant.BF16)
        try:
            weights[name] = r.tensor(name)
        except gguf_io.GGUFError as e:
            raise ModelError(str(e)) from None
    rope_freqs = None
    if "rope_freqs.weight" in r.tensors and hp.arch in ("llama", "phi3"):
        rope_freqs = r.tensor("rope_freqs.weight").reshape(-1)
        rd = hp.rope_dim or hp.head_dim
        if rope_freqs.size != rd // 2 or not np.all(np.isfinite(rope_freqs)) or \
                np.any(rope_freqs <= 0):
            raise ModelError(f"{path}: rope_freqs.weight must hold {rd // 2} positive "
                             f"factors")
    return r, hp, weights, quantized, rope_freqs


CONFIG_KEYS = {"architecture", "n_embd", "n_layers", "n_head", "n_head_kv", "n_ff",
               "context_length", "rope_base", "rope_dim", "eps", "tied", "tokenizer",
               "name"}


def load_config(path):
    """(config dict, hparams, tokenizer reader) of a --config JSON file: the shape of a
    new model and the GGUF file whose tokenizer it uses."""
    try:
        with open(path, encoding="utf-8") as f:
            cfg = json.load(f)
    except OSError as e:
        raise ModelError(f"{path}: cannot read: {e.strerror or e}") from None
    except json.JSONDecodeError as e:
        raise ModelError(f"{path}: not JSON: {e.msg} (line {e.lineno})") from None
    if not isinstance(cfg, dict):
        raise ModelError(f"{path}: expected a JSON object")
    unknown = set(cfg) - CONFIG_KEYS
    if unknown:
        raise ModelError(f"{path}: unknown keys {sorted(unknown)} (known: "
                         f"{sorted(CONFIG_KEYS)})")
    for k in ("n_embd", "n_layers", "n_head", "n_ff", "tokenizer"):
        if k not in cfg:
            raise ModelError(f"{path}: missing key {k!r}")
    try:
        tok = gguf_io.Reader(cfg["tokenizer"])
    except gguf_io.GGUFError as e:
        raise ModelError(f"{path}: tokenizer: {e}") from None
    tokens = tok.get("tokenizer.ggml.tokens")
    if not tokens:
        raise ModelError(f"{cfg['tokenizer']}: no tokenizer.ggml.tokens")
    arch = cfg.get("architecture", "llama")
    if arch not in SUPPORTED_ARCHS:
        raise ModelError(f"{path}: architecture {arch!r} is not supported by free-train "
                         f"(supported: {', '.join(SUPPORTED_ARCHS)})")
    try:
        hp = HParams(arch=arch, rope_neox=arch != "llama", fused_qkv=arch == "phi3",
                     fused_ffn=arch == "phi3",
                     biases=("attn_q", "attn_k", "attn_v") if arch == "qwen2" else (),
                     n_embd=int(cfg["n_embd"]), n_layers=int(cfg["n_layers"]),
                     n_head=int(cfg["n_head"]),
                     n_head_kv=int(cfg.get("n_head_kv", cfg["n_head"])),
                     n_ff=int(cfg["n_ff"]), n_vocab=len(tokens),
                     eps=float(cfg.get("eps", 1e-5)),
                     rope_base=float(cfg.get("rope_base", 10000.0)),
                     rope_dim=int(cfg.get("rope_dim", 0)),
                     n_ctx=int(cfg.get("context_length", 2048)),
                     tied=bool(cfg.get("tied", False)))
        hp.check()
    except (TypeError, ValueError) as e:
        raise ModelError(f"{path}: {e}") from None
    return cfg, hp, tok


def random_weights(hp, rng):
    """A new model's initial weights: N(0, 0.02) matrices, the residual outputs scaled by
    1/sqrt(2 L), norms 1."""
    w = {}
    for name, shape in tensor_shapes(hp).items():
        if name.endswith(".bias"):
            w[name] = np.zeros(shape, np.float32)
            continue
        if len(shape) == 1:
            w[name] = np.ones(shape, np.float32)
            continue
        std = 0.02
        if name.endswith(("attn_output.weight", "ffn_down.weight")):
            std /= np.sqrt(2 * hp.n_layers)
        w[name] = rng.normal(0.0, std, size=shape).astype(np.float32)
    return w


def _config_kv(cfg, hp, tok):
    a = hp.arch + "."
    kv = [("general.architecture", Value(STRING, hp.arch)),
          ("general.name", Value(STRING, str(cfg.get("name", "free-train")))),
          (a + "context_length", Value(UINT32, hp.n_ctx)),
          (a + "embedding_length", Value(UINT32, hp.n_embd)),
          (a + "block_count", Value(UINT32, hp.n_layers)),
          (a + "feed_forward_length", Value(UINT32, hp.n_ff)),
          (a + "attention.head_count", Value(UINT32, hp.n_head)),
          (a + "attention.head_count_kv", Value(UINT32, hp.n_head_kv)),
          (a + "attention.layer_norm_rms_epsilon", Value(FLOAT32, hp.eps)),
          (a + "rope.freq_base", Value(FLOAT32, hp.rope_base)),
          (a + "rope.dimension_count", Value(UINT32, hp.rope_dim or hp.head_dim)),
          (a + "vocab_size", Value(UINT32, hp.n_vocab))]
    kv += [(k, v) for k, v in tok.kv.items() if k.startswith("tokenizer.")]
    return kv


def free_kv(meta):
    """Value entries of the free.* keys from a dict of plain Python values."""
    out = []
    for key, val in meta.items():
        if isinstance(val, str):
            out.append((key, Value(STRING, val)))
        elif isinstance(val, (list, tuple)):
            out.append((key, Value(ARRAY, [float(x) for x in val], FLOAT32)))
        elif isinstance(val, float):
            out.append((key, Value(FLOAT32, val)))
        else:
            out.append((key, Value(UINT32 if 0 <= int(val) < 2**32 else UINT64, int(val))))
    return out


def save_gguf(path, weights, hp, out_type, meta, source=None, config=None):
    """Writes the trained weights. source: the --init reader (its keys and tensor order
    are kept); config: (cfg, tokenizer reader) for a new model. meta: free.* values."""
    if source is not None:
        kv = [(k, v) for k, v in source.kv.items() if not k.startswith("free.")]
        order = list(source.tensors)
    else:
        kv = _config_kv(config[0], hp, config[1])
        order = list(tensor_shapes(hp))
    file_type = 0 if out_type == dequant.F32 else 1
    kv = [(k, Value(UINT32, file_type) if k == "general.file_type" else v) for k, v in kv]
    if source is None:
        kv.insert(1, ("general.file_type", Value(UINT32, file_type)))
    kv += free_kv(meta)
    tensors = []
    for name in order:
        if name in weights:
            a = weights[name]
            tensors.append(gguf_io.tensor_from_array(
                name, a, out_type if a.ndim >= 2 else dequant.F32))
        else:   # a tensor the model does not use: copied as it was
            t = source.tensors[name]
            tensors.append(gguf_io.OutTensor(name, t.ne, t.type, source.raw(name).tobytes()))
    gguf_io.write(path, kv, tensors)
