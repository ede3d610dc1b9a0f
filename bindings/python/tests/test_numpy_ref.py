"""Checks the NumPy reference forward pass against independent implementations' outputs
(llama2.c run.c for stories260K; llama.cpp and the training code's report for
free-llama-22M). Run: FREE_MODELS_DIR=/work/shared/models /usr/bin/python3 -m pytest -v"""

import struct

import numpy as np
import pytest

from conftest import model_file, ref_model
from gguf_reader import GGUFError, GGUFReader
from refdata import read_f32_rows, read_ids_txt, read_logits_bin, read_report_reference

STORIES = "stories260K/stories260K.gguf"
LLAMA22 = "free-llama-22M/free-llama-22M.gguf"
CODE22 = "free-code-22M/free-code-22M.gguf"


def _report(name, value):
    # Shown with `pytest -rP` / -s: the measured differences are part of the result.
    print(f"{name}: {value:.3g}")


# -- GGUF reader ------------------------------------------------------------------------

def test_reader_stories_hparams():
    r = GGUFReader(model_file(STORIES))
    assert r.version == 3
    assert r.get("general.architecture") == "llama"
    assert r.get("llama.embedding_length") == 64
    assert r.get("llama.block_count") == 5
    assert len(r.get("tokenizer.ggml.tokens")) == 512
    assert len(r.tensors) == 48
    emb = r.tensor("token_embd.weight")
    assert emb.shape == (512, 64)                     # rows x cols = [ne1, ne0]
    assert r.tensor("blk.0.ffn_down.weight").shape == (64, 172)


def test_reader_f16_upcasts_exactly():
    r = GGUFReader(model_file(LLAMA22))
    t = r.tensors["blk.0.attn_q.weight"]
    assert t.type == 1 and t.ne == [384, 384]
    a = r.tensor("blk.0.attn_q.weight", dtype=np.float64)
    assert np.array_equal(a.astype(np.float16).astype(np.float64), a)


def test_reader_rejects_bad_files(tmp_path):
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUX" + b"\0" * 60)
    with pytest.raises(GGUFError, match="not a GGUF"):
        GGUFReader(bad)
    bad.write_bytes(b"GGUF" + struct.pack("<I", 1) + b"\0" * 16)
    with pytest.raises(GGUFError, match="version 1"):
        GGUFReader(bad)
    # A header that claims one key but ends inside it.
    bad.write_bytes(b"GGUF" + struct.pack("<IQQQ", 3, 0, 1, 100) + b"abc")
    with pytest.raises(GGUFError, match="past the end"):
        GGUFReader(bad)
    # A tensor whose data would lie past the end of the file.
    name = b"t"
    hdr = (b"GGUF" + struct.pack("<IQQ", 3, 1, 0) + struct.pack("<Q", len(name)) + name
           + struct.pack("<IQIQ", 1, 1000, 0, 0))
    bad.write_bytes(hdr)
    with pytest.raises(GGUFError, match="tensor t"):
        GGUFReader(bad)


# -- stories260K vs llama2.c ------------------------------------------------------------

@pytest.mark.parametrize("stem,logits", [
    ("once_upon_a_time.n64", "once_upon_a_time.logits_pos0-7.f32"),
    ("tom_and_sue.n32", "tom_and_sue.logits_pos0-31.f32"),
])
def test_stories_logits_match_llama2c(stem, logits):
    m = ref_model(STORIES)
    _, ids = read_ids_txt(model_file(f"stories260K/reference/{stem}.ids.txt"))
    ref = read_f32_rows(model_file(f"stories260K/reference/{logits}"), 512)
    out = m.forward(ids[:ref.shape[0]])
    diff = np.abs(out - ref).max()
    _report(f"stories260K {stem} max |numpy - run.c|", diff)
    assert diff < 1e-4


@pytest.mark.parametrize("stem", ["once_upon_a_time.n64", "tom_and_sue.n32", "bos.n200"])
def test_stories_greedy_matches_llama2c(stem):
    # run.c decodes greedily: every generated id is the argmax at the previous position.
    m = ref_model(STORIES)
    prompt, ids = read_ids_txt(model_file(f"stories260K/reference/{stem}.ids.txt"))
    argmax = m.forward(ids).argmax(axis=1)
    assert argmax[len(prompt) - 1:-1].tolist() == ids[len(prompt):]


def test_stories_f16_copy_reads_like_f32():
    # The F16 copy rounds the weights (logits move by ~1e-2) but decodes the same text.
    m32 = ref_model(STORIES)
    m16 = ref_model("stories260K/quant/stories260K-f16.gguf")
    _, ids = read_ids_txt(model_file("stories260K/reference/once_upon_a_time.n64.ids.txt"))
    a, b = m32.forward(ids), m16.forward(ids)
    diff = np.abs(a - b).max()
    _report("stories260K F16 copy vs F32", diff)
    assert diff < 0.05
    assert (a.argmax(axis=1) == b.argmax(axis=1)).all()


# -- free-llama-22M vs llama.cpp and the training report ---------------------------------

def test_llama22m_logits_match_llamacpp():
    m = ref_model(LLAMA22)
    ids, ref = read_logits_bin(model_file("free-llama-22M/reference/prompt1.logits.bin"))
    out = m.forward(ids)
    diff = np.abs(out - ref)
    _report("free-llama-22M max |numpy - llama.cpp|", diff.max())
    _report("free-llama-22M mean |numpy - llama.cpp|", diff.mean())
    # llama.cpp keeps its KV cache in F16, so its logits carry ~1e-3 of rounding noise
    # (already 1.5e-3 at position 0); the training report's F32 values below agree with
    # this pass to ~1e-5, which is the tight check.
    assert diff.max() < 5e-3
    assert diff.mean() < 1e-3
    assert (out.argmax(axis=1) == ref.argmax(axis=1)).all()


def test_llama22m_matches_report_reference():
    m = ref_model(LLAMA22)
    ref = read_report_reference(model_file("free-llama-22M/report.json"))
    assert m.exit_layer == 3
    shallow, deep = m.forward_both(ref["prompt_ids"], 3)
    assert deep.argmax(axis=1).tolist() == ref["deep_argmax"]
    assert shallow.argmax(axis=1).tolist() == ref["shallow_argmax"]
    worst = 0.0
    for logits, top5 in ((deep, ref["deep_logits_last_top5"]),
                         (shallow, ref["shallow_logits_last_top5"])):
        order = np.argsort(-logits[-1])[:5]
        assert order.tolist() == [t for t, _ in top5]
        for token, value in top5:
            worst = max(worst, abs(logits[-1, token] - value))
    _report("free-llama-22M max |numpy - report top-5|", worst)
    assert worst < 1e-4
    # forward_shallow is the same computation as the first half of forward_both.
    assert np.array_equal(m.forward_shallow(ref["prompt_ids"], 3), shallow)


def test_llama22m_greedy_matches_report():
    m = ref_model(LLAMA22)
    ref = read_report_reference(model_file("free-llama-22M/report.json"))
    want = ref["greedy_deep_ids"]
    n_prompt = len(ref["prompt_ids"])
    assert want[:n_prompt] == ref["prompt_ids"]
    # One forward over the whole greedy sequence gives every step's argmax at once.
    argmax = m.forward(want).argmax(axis=1)
    assert argmax[n_prompt - 1:-1].tolist() == want[n_prompt:]


def test_code22m_logits_match_llamacpp():
    m = ref_model(CODE22)
    ids, ref = read_logits_bin(model_file("free-code-22M/reference/prompt1.logits.bin"))
    out = m.forward(ids)
    diff = np.abs(out - ref)
    _report("free-code-22M max |numpy - llama.cpp|", diff.max())
    assert diff.max() < 5e-3
    assert (out.argmax(axis=1) == ref.argmax(axis=1)).all()


def test_q8_0_dequantization_is_close():
    # Q8_0 weights are a rounding of the F16 ones: logits move, but only a little.
    m16 = ref_model(LLAMA22)
    m8 = ref_model("free-llama-22M/free-llama-22M-q8_0.gguf")
    ids = read_report_reference(model_file("free-llama-22M/report.json"))["prompt_ids"]
    a, b = m16.forward(ids), m8.forward(ids)
    _report("free-llama-22M Q8_0 vs F16 max logit diff", np.abs(a - b).max())
    assert np.abs(a - b).max() < 0.5
    assert (a.argmax(axis=1) == b.argmax(axis=1)).mean() >= 0.8
