"""Dequantizes ggml tensor data (as it lies in a GGUF file) to float32 with NumPy.

Written from the block layouts in lib/quant_blocks.h. Every function takes the raw bytes
of a whole tensor (a uint8 array) and the element count and returns a flat float32 array
in ggml order (row-major, ne0 fastest).
"""

import numpy as np

F32, F16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0 = 0, 1, 2, 3, 6, 7, 8
Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, BF16 = 10, 11, 12, 13, 14, 30

TYPE_NAMES = {F32: "F32", F16: "F16", Q4_0: "Q4_0", Q4_1: "Q4_1", Q5_0: "Q5_0",
              Q5_1: "Q5_1", Q8_0: "Q8_0", Q2_K: "Q2_K", Q3_K: "Q3_K", Q4_K: "Q4_K",
              Q5_K: "Q5_K", Q6_K: "Q6_K", BF16: "BF16"}

# type -> (elements per block, bytes per block)
BLOCKS = {F32: (1, 4), F16: (1, 2), BF16: (1, 2), Q4_0: (32, 18), Q4_1: (32, 20),
          Q5_0: (32, 22), Q5_1: (32, 24), Q8_0: (32, 34), Q2_K: (256, 84),
          Q3_K: (256, 110), Q4_K: (256, 144), Q5_K: (256, 176), Q6_K: (256, 210)}


class UnsupportedType(ValueError):
    pass


def type_name(t):
    return TYPE_NAMES.get(t, f"type {t}")


def n_bytes(ggml_type, n_elements):
    """Size in bytes of n_elements of ggml_type (raises UnsupportedType)."""
    if ggml_type not in BLOCKS:
        raise UnsupportedType(f"ggml tensor type {ggml_type} is not known")
    qk, size = BLOCKS[ggml_type]
    if n_elements % qk:
        raise ValueError(f"{n_elements} elements are not whole {type_name(ggml_type)} "
                         f"blocks of {qk}")
    return n_elements // qk * size


def _f16(b):
    """Columns of a [n, k] uint8 array holding little-endian halves -> float32 [n, k/2]."""
    return np.ascontiguousarray(b).view("<f2").astype(np.float32)


def _blocks(raw, ggml_type):
    return np.asarray(raw, dtype=np.uint8).reshape(-1, BLOCKS[ggml_type][1])


def _nibbles(qs):
    """qs [n, 16] -> [n, 32]: low nibbles are elements 0..15, high nibbles 16..31."""
    return np.concatenate([qs & 0x0F, qs >> 4], axis=1).astype(np.float32)


def _bits5(qh_bytes):
    """The 5th bit of each of 32 elements from qh[4] (little-endian u32) -> [n, 32] 0/16."""
    qh = np.ascontiguousarray(qh_bytes).view("<u4")          # [n, 1]
    shifts = np.arange(32, dtype=np.uint32)
    return (((qh >> shifts) & 1) << 4).astype(np.float32)


def _q8_0(raw):
    b = _blocks(raw, Q8_0)
    return _f16(b[:, :2]) * b[:, 2:].view(np.int8).astype(np.float32)


def _q4_0(raw):
    b = _blocks(raw, Q4_0)
    return _f16(b[:, :2]) * (_nibbles(b[:, 2:]) - 8.0)


def _q4_1(raw):
    b = _blocks(raw, Q4_1)
    return _f16(b[:, :2]) * _nibbles(b[:, 4:]) + _f16(b[:, 2:4])


def _q5_0(raw):
    b = _blocks(raw, Q5_0)
    return _f16(b[:, :2]) * (_nibbles(b[:, 6:]) + _bits5(b[:, 2:6]) - 16.0)


def _q5_1(raw):
    b = _blocks(raw, Q5_1)
    return _f16(b[:, :2]) * (_nibbles(b[:, 8:]) + _bits5(b[:, 4:8])) + _f16(b[:, 2:4])


def _k_scales(sc):
    """The 8 six-bit scales and mins packed in scales[12] of Q4_K / Q5_K -> two [n, 8]."""
    sc = sc.astype(np.uint16)
    d = np.empty((sc.shape[0], 8), np.float32)
    m = np.empty((sc.shape[0], 8), np.float32)
    d[:, :4] = sc[:, 0:4] & 63
    m[:, :4] = sc[:, 4:8] & 63
    d[:, 4:] = (sc[:, 8:12] & 0x0F) | ((sc[:, 0:4] >> 6) << 4)
    m[:, 4:] = (sc[:, 8:12] >> 4) | ((sc[:, 4:8] >> 6) << 4)
    return d, m


def _k_nibbles(qs):
    """qs [n, 128] -> q [n, 8, 32]: chunk c of 32 bytes gives sub-block 2c (low nibbles)
    and 2c + 1 (high nibbles)."""
    q = qs.reshape(-1, 4, 32)
    return np.stack([q & 0x0F, q >> 4], axis=2).reshape(-1, 8, 32).astype(np.float32)


def _q4_k(raw):
    b = _blocks(raw, Q4_K)
    d, dmin = _f16(b[:, 0:2]), _f16(b[:, 2:4])
    sc, mn = _k_scales(b[:, 4:16])
    q = _k_nibbles(b[:, 16:144])
    y = (d * sc)[:, :, None] * q - (dmin * mn)[:, :, None]
    return y.reshape(-1, 256)


def _q5_k(raw):
    b = _blocks(raw, Q5_K)
    d, dmin = _f16(b[:, 0:2]), _f16(b[:, 2:4])
    sc, mn = _k_scales(b[:, 4:16])
    qh = b[:, 16:48]                                   # [n, 32]: bit j is sub-block j
    q = _k_nibbles(b[:, 48:176])
    bits = np.arange(8, dtype=np.uint8)
    high = ((qh[:, None, :] >> bits[None, :, None]) & 1).astype(np.float32) * 16.0
    y = (d * sc)[:, :, None] * (q + high) - (dmin * mn)[:, :, None]
    return y.reshape(-1, 256)


def _q6_k(raw):
    b = _blocks(raw, Q6_K)
    ql = b[:, 0:128].reshape(-1, 2, 64)
    qh = b[:, 128:192].reshape(-1, 2, 32)
    sc = b[:, 192:208].view(np.int8).astype(np.float32).reshape(-1, 2, 8)
    d = _f16(b[:, 208:210])                            # [n, 1]
    out = np.empty((b.shape[0], 2, 4, 32), np.float32)
    lo = [ql[:, :, 0:32] & 0x0F, ql[:, :, 32:64] & 0x0F, ql[:, :, 0:32] >> 4,
          ql[:, :, 32:64] >> 4]
    for k in range(4):
        hi = (qh >> (2 * k)) & 3
        out[:, :, k, :] = (lo[k] | (hi << 4)).astype(np.float32) - 32.0
    # scale index within a half: l / 16 + 2k for element l of quarter k
    scale = sc.reshape(-1, 2, 4, 2)                    # [n, half, k, l/16]
    out = out.reshape(-1, 2, 4, 2, 16) * scale[..., None]
    return (d[:, :, None, None, None] * out).reshape(-1, 256)


_DEQUANT = {Q8_0: _q8_0, Q4_0: _q4_0, Q4_1: _q4_1, Q5_0: _q5_0, Q5_1: _q5_1,
            Q4_K: _q4_k, Q5_K: _q5_k, Q6_K: _q6_k}


def dequantize(raw, ggml_type, n_elements):
    """float32 array of n_elements from the raw bytes of one tensor."""
    raw = np.asarray(raw, dtype=np.uint8)
    if ggml_type == F32:
        out = raw.view("<f4").astype(np.float32)
    elif ggml_type == F16:
        out = raw.view("<f2").astype(np.float32)
    elif ggml_type == BF16:
        out = (raw.view("<u2").astype(np.uint32) << 16).view(np.float32)
    elif ggml_type in _DEQUANT:
        out = _DEQUANT[ggml_type](raw)
    else:
        raise UnsupportedType(f"cannot dequantize {type_name(ggml_type)} tensors "
                              f"(supported: F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, "
                              f"Q4_K, Q5_K, Q6_K); convert the file first with "
                              f"free-convert --type f16")
    out = np.asarray(out, dtype=np.float32).reshape(-1)
    if out.size != n_elements:
        raise ValueError(f"dequantized {out.size} elements, expected {n_elements}")
    return out
