"""An independent, plain NumPy LLaMA forward pass: the oracle libfree is tested against.

Everything is computed in float64 from the file's weights (F16 upcasts exactly), over a
whole token list at once with a causal mask, so it shares no code path, cache or batching
logic with the C library.

    model = RefModel.load("stories260K.gguf")
    logits = model.forward([1, 403, 407])              # [n_tokens, n_vocab]
    shallow = model.forward_shallow([1, 403, 407], 3)  # exit head after 3 blocks
"""

import math

import numpy as np

from gguf_reader import GGUFReader


class RefModel:
    def __init__(self, hp, weights):
        self.__dict__.update(hp)
        self.w = weights

    @classmethod
    def load(cls, path, dtype=np.float64):
        r = GGUFReader(path)
        arch = r.get("general.architecture")
        if arch != "llama":
            raise ValueError(f"{path}: architecture {arch!r} is not llama")

        def key(name, default=None):
            v = r.get(f"llama.{name}", default)
            if v is None:
                raise ValueError(f"{path}: missing llama.{name}")
            return v

        n_embd = int(key("embedding_length"))
        n_head = int(key("attention.head_count"))
        head_dim = n_embd // n_head
        hp = dict(
            n_embd=n_embd,
            n_layers=int(key("block_count")),
            n_head=n_head,
            n_head_kv=int(key("attention.head_count_kv", n_head)),
            head_dim=head_dim,
            n_ff=int(key("feed_forward_length")),
            eps=float(key("attention.layer_norm_rms_epsilon", 1e-5)),
            rope_base=float(key("rope.freq_base", 10000.0)),
            rope_dim=int(key("rope.dimension_count", head_dim)),
            exit_layer=int(r.get("free.exit_layer", 0)),
        )
        w = {}
        for name in r.tensors:
            w[name] = r.tensor(name, dtype=dtype)
        if "output.weight" not in w:
            w["output.weight"] = w["token_embd.weight"]
        hp["n_vocab"] = w["token_embd.weight"].shape[0]
        r.close()
        return cls(hp, w)

    # -- primitives --------------------------------------------------------------------

    def rmsnorm(self, x, weight):
        return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + self.eps) * weight

    def rope(self, x, positions):
        """llama.cpp's "normal" RoPE: rotate adjacent pairs (2i, 2i+1) of the first
        rope_dim dimensions of every head by pos * base^(-2i / rope_dim).
        x: [n, heads, head_dim]."""
        half = self.rope_dim // 2
        inv_freq = self.rope_base ** (-2.0 * np.arange(half) / self.rope_dim)
        theta = np.asarray(positions, dtype=np.float64)[:, None] * inv_freq[None, :]
        cos = np.cos(theta)[:, None, :]
        sin = np.sin(theta)[:, None, :]
        out = x.copy()
        x0 = x[:, :, 0:self.rope_dim:2]
        x1 = x[:, :, 1:self.rope_dim:2]
        out[:, :, 0:self.rope_dim:2] = x0 * cos - x1 * sin
        out[:, :, 1:self.rope_dim:2] = x0 * sin + x1 * cos
        return out

    # -- the network -------------------------------------------------------------------

    def block(self, layer, x, positions):
        """One transformer block over all rows x [n, n_embd] (causal among them)."""
        w = self.w
        p = f"blk.{layer}."
        n = x.shape[0]
        h = self.rmsnorm(x, w[p + "attn_norm.weight"])
        q = (h @ w[p + "attn_q.weight"].T).reshape(n, self.n_head, self.head_dim)
        k = (h @ w[p + "attn_k.weight"].T).reshape(n, self.n_head_kv, self.head_dim)
        v = (h @ w[p + "attn_v.weight"].T).reshape(n, self.n_head_kv, self.head_dim)
        q = self.rope(q, positions)
        k = self.rope(k, positions)

        group = self.n_head // self.n_head_kv
        scale = 1.0 / math.sqrt(self.head_dim)
        causal = np.triu(np.ones((n, n), dtype=bool), k=1)
        att_out = np.empty((n, self.n_head, self.head_dim))
        for hd in range(self.n_head):
            kv = hd // group
            scores = (q[:, hd, :] @ k[:, kv, :].T) * scale     # [n, n]
            scores[causal] = -np.inf
            scores -= scores.max(axis=1, keepdims=True)
            prob = np.exp(scores)
            prob /= prob.sum(axis=1, keepdims=True)
            att_out[:, hd, :] = prob @ v[:, kv, :]
        x = x + att_out.reshape(n, self.n_embd) @ w[p + "attn_output.weight"].T

        h = self.rmsnorm(x, w[p + "ffn_norm.weight"])
        gate = h @ w[p + "ffn_gate.weight"].T
        up = h @ w[p + "ffn_up.weight"].T
        silu = gate / (1.0 + np.exp(-gate))
        return x + (silu * up) @ w[p + "ffn_down.weight"].T

    def head(self, x):
        """output_norm + output (the LM head), used by both exits."""
        return self.rmsnorm(x, self.w["output_norm.weight"]) @ self.w["output.weight"].T

    def hidden(self, tokens, n_blocks=None, start_pos=0):
        """The residual stream [n, n_embd] after the first n_blocks blocks."""
        tokens = np.asarray(tokens, dtype=np.int64)
        if tokens.ndim != 1 or len(tokens) == 0:
            raise ValueError("tokens must be a non-empty 1-d list")
        if tokens.min() < 0 or tokens.max() >= self.n_vocab:
            raise ValueError(f"token id out of range [0, {self.n_vocab})")
        n_blocks = self.n_layers if n_blocks is None else n_blocks
        positions = np.arange(start_pos, start_pos + len(tokens))
        x = self.w["token_embd.weight"][tokens].astype(np.float64)
        for layer in range(n_blocks):
            x = self.block(layer, x, positions)
        return x

    def forward(self, tokens):
        """Full-depth logits [n_tokens, n_vocab] for every position."""
        return self.head(self.hidden(tokens))

    def forward_shallow(self, tokens, n_blocks=None):
        """Shallow-exit logits: the LM head applied after the first n_blocks blocks
        (default: the file's free.exit_layer)."""
        n_blocks = self.exit_layer if n_blocks is None else n_blocks
        if not 0 < n_blocks <= self.n_layers:
            raise ValueError(f"exit layer {n_blocks} not in [1, {self.n_layers}]")
        return self.head(self.hidden(tokens, n_blocks))

    def forward_both(self, tokens, n_blocks=None):
        """(shallow, deep) logits sharing the first n_blocks blocks."""
        n_blocks = self.exit_layer if n_blocks is None else n_blocks
        tokens = np.asarray(tokens, dtype=np.int64)
        positions = np.arange(len(tokens))
        x = self.hidden(tokens, n_blocks)
        shallow = self.head(x)
        for layer in range(n_blocks, self.n_layers):
            x = self.block(layer, x, positions)
        return shallow, self.head(x)

    def greedy(self, tokens, n_new):
        """Greedy continuation (full recompute each step; for small tests only)."""
        ids = list(tokens)
        for _ in range(n_new):
            ids.append(int(np.argmax(self.forward(ids)[-1])))
        return ids[len(tokens):]
