"""Training data for free-train: documents from text / JSON-lines files, tokenized by
libfree itself (through the Python binding), split into training and held-out parts, and
served as random windows.

- `.jsonl` files: one JSON object per line with a string field (default "text"); blank
  lines are skipped.
- Any other file: UTF-8 text; one or more blank lines separate documents.
Every document is tokenized as libfree's decoding starts a text (BOS as the vocabulary
says), and with a trailing EOS when asked.
"""

import json
import pathlib
import re

import numpy as np


class DataError(ValueError):
    pass


_BLANK_LINES = re.compile(r"\n[ \t\r\f\v]*\n")


def read_documents(paths, field="text"):
    """The documents of every file, in order."""
    docs = []
    for path in paths:
        p = pathlib.Path(path)
        try:
            raw = p.read_bytes()
        except OSError as e:
            raise DataError(f"{path}: cannot read: {e.strerror or e}") from None
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise DataError(f"{path}: not UTF-8 text (byte {e.start})") from None
        before = len(docs)
        if p.suffix.lower() == ".jsonl":
            for n, line in enumerate(text.splitlines(), 1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as e:
                    raise DataError(f"{path}:{n}: not JSON: {e.msg}") from None
                if not isinstance(obj, dict) or not isinstance(obj.get(field), str):
                    raise DataError(f"{path}:{n}: no string field {field!r}")
                if obj[field].strip():
                    docs.append(obj[field])
        else:
            docs.extend(d for d in _BLANK_LINES.split(text) if d.strip())
        if len(docs) == before:
            raise DataError(f"{path}: no text (empty file or only blank documents)")
    if not docs:
        raise DataError("no training data: give at least one file with --data")
    return docs


def tokenize(docs, vocab, add_eos=False):
    """Token arrays (int64) of the documents: BOS and EOS as the vocabulary says (as
    libfree's decoding starts a text), special-token text taken literally; EOS appended
    when add_eos. vocab is a libfree.Model (vocab_only is enough)."""
    bos, eos = vocab.bos, vocab.eos
    add_special = getattr(vocab, "_tokenize_ex", None)   # free_tokenize_ex
    out = []
    for d in docs:
        ids = add_special(d, 1) if add_special else vocab.tokenize(d, add_bos=bos >= 0)
        if add_eos and eos >= 0 and (not ids or ids[-1] != eos):
            ids.append(eos)
        out.append(np.asarray(ids, dtype=np.int64))
    return out


def split(token_docs, val_frac, seed):
    """(train, val) lists of documents: a seeded choice of about val_frac of them (at
    least one when there are two or more) is held out."""
    n = len(token_docs)
    n_val = 0
    if val_frac > 0 and n >= 2:
        n_val = min(n - 1, max(1, int(round(n * val_frac))))
    order = np.random.default_rng(seed).permutation(n)
    held = set(order[:n_val].tolist())
    train = [d for i, d in enumerate(token_docs) if i not in held]
    val = [d for i, d in enumerate(token_docs) if i in held]
    return train, val


class Windows:
    """Random windows of seq + 1 tokens from the concatenated training documents. The
    generator state is part of a checkpoint, so a resumed run draws the same batches."""

    def __init__(self, docs, seq, seed):
        self.stream = np.concatenate(docs) if docs else np.zeros(0, np.int64)
        self.seq = seq
        if len(self.stream) < seq + 1:
            raise DataError(f"the training data has {len(self.stream)} tokens, fewer than "
                            f"--seq + 1 = {seq + 1}: give more text or a smaller --seq")
        self.rng = np.random.default_rng(seed)

    @property
    def n_tokens(self):
        return len(self.stream)

    def batch(self, n):
        """[n, seq + 1] int64."""
        starts = self.rng.integers(0, len(self.stream) - self.seq, size=n)
        idx = starts[:, None] + np.arange(self.seq + 1)[None, :]
        return self.stream[idx]

    def state(self):
        return self.rng.bit_generator.state

    def set_state(self, state):
        self.rng.bit_generator.state = state


def val_windows(docs, seq, max_tokens):
    """Consecutive non-overlapping windows [n, seq + 1] of the held-out documents, at most
    about max_tokens predictions; an empty array when there is too little."""
    if not docs:
        return np.zeros((0, seq + 1), np.int64)
    stream = np.concatenate(docs)
    n = min((len(stream) - 1) // seq, max(1, max_tokens // seq))
    if n <= 0:
        return np.zeros((0, seq + 1), np.int64)
    return np.stack([stream[i * seq:i * seq + seq + 1] for i in range(n)])
