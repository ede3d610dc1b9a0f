"""The LLaMA-family forward pass in PyTorch (llama, qwen2, phi3), on GGUF tensors as they
are stored.

Parameters keep their GGUF names and layouts (rows x cols = reversed ne), so a trained
model is written back tensor for tensor. RoPE is llama.cpp's "normal" type, the one libfree
implements for llama: adjacent pairs (2i, 2i+1) of the first rope_dim dimensions of each
head are rotated by pos * base^(-2i / rope_dim) (GGUF files from llama.cpp's converter have
their Q/K rows permuted for exactly this), so no permutation happens here; qwen2 and phi3
rotate the pairs (i, i + rope_dim / 2) (NEOX). The architectures differ as libfree's
lib/model_arch.c says: optional biases (llama), Q/K/V biases (qwen2), fused QKV and
gate/up matrices (phi3), rope_freqs.weight and linear RoPE scaling.
"""

import dataclasses
import math

import torch
import torch.nn.functional as F


@dataclasses.dataclass
class HParams:
    n_embd: int
    n_layers: int
    n_head: int
    n_head_kv: int
    n_ff: int
    n_vocab: int
    eps: float = 1e-5
    rope_base: float = 10000.0
    rope_dim: int = 0            # 0: the head size
    n_ctx: int = 2048
    tied: bool = False           # no output.weight: the head is token_embd.weight
    arch: str = "llama"
    rope_neox: bool = False      # rotate pairs (i, i + rope_dim/2) (qwen2, phi3)
    rope_scale: float = 1.0      # linear RoPE scaling: every angle is divided by it
    fused_qkv: bool = False      # phi3: blk.N.attn_qkv.weight, rows Q then K then V
    fused_ffn: bool = False      # phi3: blk.N.ffn_up.weight holds the gate rows, then up
    biases: tuple = ()           # matrices with a .bias (e.g. attn_q, attn_k, attn_v)

    @property
    def head_dim(self):
        return self.n_embd // self.n_head

    def check(self):
        """Raises ValueError naming the first inconsistent hyper-parameter."""
        for name in ("n_embd", "n_layers", "n_head", "n_head_kv", "n_ff", "n_vocab"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} = {getattr(self, name)} must be at least 1")
        if self.n_embd % self.n_head:
            raise ValueError(f"n_head {self.n_head} does not divide n_embd {self.n_embd}")
        if self.n_head % self.n_head_kv:
            raise ValueError(f"n_head_kv {self.n_head_kv} does not divide n_head "
                             f"{self.n_head}")
        rd = self.rope_dim or self.head_dim
        if rd % 2 or rd > self.head_dim:
            raise ValueError(f"rope dimension {rd} must be even and at most the head size "
                             f"{self.head_dim}")


def tensor_shapes(hp):
    """GGUF tensor name -> shape (rows x cols) of every tensor the model trains."""
    d, f, v = hp.n_embd, hp.n_ff, hp.n_vocab
    kv = hp.n_head_kv * hp.head_dim
    shapes = {"token_embd.weight": (v, d), "output_norm.weight": (d,)}
    if not hp.tied:
        shapes["output.weight"] = (v, d)
    for i in range(hp.n_layers):
        p = f"blk.{i}."
        mats = {"attn_output": (d, d), "ffn_down": (d, f)}
        if hp.fused_qkv:
            mats["attn_qkv"] = (d + 2 * kv, d)
        else:
            mats.update({"attn_q": (d, d), "attn_k": (kv, d), "attn_v": (kv, d)})
        if hp.fused_ffn:
            mats["ffn_up"] = (2 * f, d)
        else:
            mats.update({"ffn_gate": (f, d), "ffn_up": (f, d)})
        shapes.update({p + "attn_norm.weight": (d,), p + "ffn_norm.weight": (d,)})
        for m, shape in mats.items():
            shapes[p + m + ".weight"] = shape
        for m in hp.biases:
            shapes[p + m + ".bias"] = (mats[m][0],)
    return shapes


def _key(name):
    return name.replace(".", "__")


class Llama(torch.nn.Module):
    """forward(tokens [B, T]) -> list of hidden states [B, T, d] after the blocks named in
    `taps` (block counts, 0 = the embeddings); head(h) -> logits."""

    def __init__(self, hp, weights, rope_freqs=None):
        super().__init__()
        hp.check()
        self.hp = hp
        self.names = list(tensor_shapes(hp))
        self.params = torch.nn.ParameterDict()
        for name, shape in tensor_shapes(hp).items():
            w = torch.as_tensor(weights[name], dtype=torch.float32)
            if tuple(w.shape) != shape:
                raise ValueError(f"tensor {name} has shape {tuple(w.shape)}, expected "
                                 f"{shape}")
            self.params[_key(name)] = torch.nn.Parameter(w.clone())
        rd = hp.rope_dim or hp.head_dim
        inv = hp.rope_base ** (-torch.arange(0, rd // 2, dtype=torch.float64) * 2.0 / rd)
        inv = inv / hp.rope_scale
        if rope_freqs is not None:   # rope_freqs.weight: angle i divided by factor i
            inv = inv / torch.as_tensor(rope_freqs, dtype=torch.float64).reshape(-1)
        self.register_buffer("inv_freq", inv, persistent=False)
        self.rope_dim = rd

    def w(self, name):
        return self.params[_key(name)]

    def weights(self):
        """GGUF name -> float32 numpy array (a copy)."""
        return {n: self.w(n).detach().cpu().float().numpy().copy() for n in self.names}

    # -- pieces -------------------------------------------------------------------------

    def rmsnorm(self, x, weight):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.hp.eps) * weight

    def rope_tables(self, n, device):
        pos = torch.arange(n, dtype=torch.float64, device=device)
        theta = pos[:, None] * self.inv_freq.to(device)[None, :]
        return torch.cos(theta).float(), torch.sin(theta).float()   # [T, rd/2]

    def rope(self, x, cos, sin):
        """x [B, T, heads, head_dim]: rotate pairs of the first rope_dim dims, adjacent
        (2i, 2i + 1) or, NEOX style, (i, i + rope_dim / 2)."""
        rd = self.rope_dim
        c, s = cos[None, :, None, :], sin[None, :, None, :]
        if self.hp.rope_neox:
            x0, x1 = x[..., :rd // 2], x[..., rd // 2:rd]
            rot = torch.cat([x0 * c - x1 * s, x0 * s + x1 * c], dim=-1)
        else:
            xr = x[..., :rd].reshape(*x.shape[:-1], rd // 2, 2)
            x0, x1 = xr[..., 0], xr[..., 1]
            rot = torch.stack([x0 * c - x1 * s, x0 * s + x1 * c], dim=-1).flatten(-2)
        if rd == x.shape[-1]:
            return rot
        return torch.cat([rot, x[..., rd:]], dim=-1)

    def block(self, i, x, cos, sin, mask):
        hp = self.hp
        p = f"blk.{i}."
        B, T, _ = x.shape
        h = self.rmsnorm(x, self.w(p + "attn_norm.weight"))
        kvd = hp.n_head_kv * hp.head_dim
        if hp.fused_qkv:
            q, k, v = self.linear(p, "attn_qkv", h).split([hp.n_embd, kvd, kvd], dim=-1)
        else:
            q, k, v = (self.linear(p, m, h) for m in ("attn_q", "attn_k", "attn_v"))
        q = q.reshape(B, T, hp.n_head, hp.head_dim)
        k = k.reshape(B, T, hp.n_head_kv, hp.head_dim)
        v = v.reshape(B, T, hp.n_head_kv, hp.head_dim)
        q, k = self.rope(q, cos, sin), self.rope(k, cos, sin)
        group = hp.n_head // hp.n_head_kv
        if group > 1:   # query head j reads KV head j // group
            k = k.repeat_interleave(group, dim=2)
            v = v.repeat_interleave(group, dim=2)
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))            # [B, H, T, hd]
        scores = (q @ k.transpose(-1, -2)) * (1.0 / math.sqrt(hp.head_dim))
        scores = scores.masked_fill(mask, float("-inf"))
        att = torch.softmax(scores.float(), dim=-1).to(v.dtype) @ v
        att = att.transpose(1, 2).reshape(B, T, hp.n_embd)
        x = x + self.linear(p, "attn_output", att)
        h = self.rmsnorm(x, self.w(p + "ffn_norm.weight"))
        if hp.fused_ffn:
            g, u = self.linear(p, "ffn_up", h).split([hp.n_ff, hp.n_ff], dim=-1)
        else:
            g, u = self.linear(p, "ffn_gate", h), self.linear(p, "ffn_up", h)
        return x + self.linear(p, "ffn_down", F.silu(g) * u)

    def linear(self, p, m, x):
        """x @ W.T (+ bias when the file has one) for matrix m of block prefix p."""
        bias = self.w(p + m + ".bias") if m in self.hp.biases else None
        return F.linear(x, self.w(p + m + ".weight"), bias)

    def head(self, h):
        """The LM head both exits share: output_norm + output (or the tied embedding)."""
        out = self.w("token_embd.weight") if self.hp.tied else self.w("output.weight")
        return F.linear(self.rmsnorm(h, self.w("output_norm.weight")), out)

    def forward(self, tokens, taps):
        """Hidden states after each block count in taps (sorted), one tensor each."""
        B, T = tokens.shape
        cos, sin = self.rope_tables(T, tokens.device)
        mask = torch.triu(torch.ones(T, T, dtype=torch.bool, device=tokens.device), 1)
        x = F.embedding(tokens, self.w("token_embd.weight"))
        out = []
        want = sorted(taps)
        if want and want[0] == 0:
            out.append(x)
        for i in range(self.hp.n_layers):
            x = self.block(i, x, cos, sin, mask)
            if (i + 1) in want:
                out.append(x)
        return out
