"""Readers for the reference outputs under FREE_MODELS_DIR (layouts in its README.md)."""

import json

import numpy as np


def read_ids_txt(path):
    """A llama2.c `.ids.txt`: lines 'prompt_tokens N: ids...' and 'all_ids N: ids...'.
    Returns (prompt_ids, all_ids)."""
    fields = {}
    for line in open(path, encoding="utf-8"):
        if ":" not in line:
            continue
        head, ids = line.split(":", 1)
        name, count = head.split()
        values = [int(x) for x in ids.split()]
        if len(values) != int(count):
            raise ValueError(f"{path}: {name} says {count} ids but lists {len(values)}")
        fields[name] = values
    return fields["prompt_tokens"], fields["all_ids"]


def read_f32_rows(path, n_vocab):
    """Raw little-endian float32 logits, one row of n_vocab per position."""
    data = np.fromfile(path, dtype="<f4")
    if data.size % n_vocab:
        raise ValueError(f"{path}: {data.size} floats is not a multiple of {n_vocab}")
    return data.reshape(-1, n_vocab)


def read_logits_bin(path):
    """llama.cpp logits dump: int32 n_tokens, int32 n_vocab, int32 ids[n_tokens],
    float32 logits[n_tokens][n_vocab]. Returns (ids, logits)."""
    raw = open(path, "rb").read()
    n, vocab = (int(v) for v in np.frombuffer(raw[:8], dtype="<i4"))
    want = 8 + 4 * n + 4 * n * vocab
    if len(raw) != want:
        raise ValueError(f"{path}: {len(raw)} bytes, expected {want} for {n} x {vocab}")
    ids = np.frombuffer(raw[8:8 + 4 * n], dtype="<i4").astype(np.int64)
    logits = np.frombuffer(raw[8 + 4 * n:], dtype="<f4").reshape(n, vocab)
    return ids.tolist(), logits


def read_report_reference(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)["reference"]
