"""Chat: Model.format_chat / chat_template and Context.chat (free_chat_format), and
free-cli --chat against the binding."""

import pathlib
import subprocess
import os

import pytest

from conftest import model_file

import libfree

LLAMA22 = "free-llama-22M/free-llama-22M.gguf"
SYSTEM = "You answer in one sentence."


def build_dir():
    return pathlib.Path(os.environ.get(
        "FREE_BUILD_DIR", pathlib.Path(__file__).resolve().parents[3] / "build"))


@pytest.fixture(scope="module")
def model():
    try:
        libfree.load_library()
    except libfree.LibraryNotFound as e:
        pytest.skip(f"libfree is not usable yet: {e}")
    with libfree.Model(model_file(LLAMA22)) as m:
        yield m


def test_format_chat(model):
    msgs = [{"role": "system", "content": "Be brief."}, ("user", "Hi é")]
    want = "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi é<|im_end|>\n"
    assert model.format_chat(msgs, "chatml", add_assistant=False) == want
    assert model.format_chat(msgs, "chatml") == want + "<|im_start|>assistant\n"
    assert model.format_chat([], "llama3") == \
        "<|start_header_id|>assistant<|end_header_id|>\n\n"
    # A long conversation: every byte of it comes back.
    long = [("user", "x" * 5000)] * 3
    assert len(model.format_chat(long, "zephyr")) == 3 * (5000 + 23) + 14


def test_no_template_and_bad_input(model):
    assert model.chat_template is None
    with pytest.raises(libfree.FreeError) as e:
        model.format_chat([("user", "hi")])
    assert e.value.status == libfree.Status.ERR_UNSUPPORTED
    assert "no chat template" in str(e.value)
    with pytest.raises(libfree.FreeError) as e:
        model.format_chat([("user", "hi")], "nonesuch")
    assert e.value.status == libfree.Status.ERR_UNSUPPORTED
    with pytest.raises(libfree.FreeError) as e:
        model.format_chat([("user", b"bad \xff byte")], "chatml")
    assert e.value.status == libfree.Status.ERR_INVALID_ARG
    assert "not valid UTF-8" in str(e.value)


def test_chat_keeps_the_cache(model):
    conv = [("system", SYSTEM), ("user", "Where is the river?")]
    with model.context() as ctx, model.context() as ref:
        reply1 = ctx.chat(conv, max_tokens=12, template="chatml")
        # The first turn is the formatted conversation decoded from an empty context.
        text1 = model.format_chat(conv, "chatml")
        assert reply1 == ref.generate(text1, max_tokens=12)
        after1 = ctx.stats().prompt_tokens

        conv += [("assistant", reply1), ("user", "And the sea?")]
        reply2 = ctx.chat(conv, max_tokens=12, template="chatml")
        # Only the text after the first reply was prefilled ...
        held = model.format_chat(conv[:3], "chatml", add_assistant=False)
        suffix = model.format_chat(conv, "chatml")[len(held):]
        assert suffix.startswith("<|im_start|>user\nAnd the sea?")
        new_tokens = len(model.tokenize(suffix, add_bos=False))
        prefilled = ctx.stats().prompt_tokens - after1
        assert new_tokens <= prefilled <= new_tokens + 1  # + the last token handed out
        # ... and the answer is the one that continuing the same context gives.
        assert reply2 == ref.generate(suffix, max_tokens=12, reset=False)

        # A conversation that does not continue the previous one starts over.
        other = [("user", "Who are you?")]
        reply3 = ctx.chat(other, max_tokens=8, template="chatml")
        with model.context() as fresh:
            assert reply3 == fresh.generate(model.format_chat(other, "chatml"), max_tokens=8)


@pytest.fixture(scope="module")
def qwen_random(model, tmp_path_factory):
    """A 2-layer llama with random weights and Qwen2's byte-level BPE vocabulary, which
    carries Qwen2's chat template (ChatML)."""
    tool = build_dir() / "tools" / "free-random"
    vocab = model_file("vocab/ggml-vocab-qwen2.gguf")
    if not tool.exists():
        pytest.skip(f"{tool} not built")
    out = tmp_path_factory.mktemp("chat") / "qwen-random.gguf"
    subprocess.run([str(tool), str(out), "--vocab-from", str(vocab), "--dim", "64",
                    "--layers", "2", "--ff", "128", "--heads", "4", "--ctx", "512",
                    "--type", "f32", "--tied"], check=True, capture_output=True, timeout=120)
    try:
        m = libfree.Model(out)
    except libfree.FreeError as e:
        pytest.skip(f"this vocabulary does not load yet: {e}")
    with m:
        yield m


def test_chat_parses_special_tokens(qwen_random):
    m = qwen_random
    assert m.chat_template == "chatml"
    # "<|im_start|>" is one token with special parsing, several without.
    assert len(m._tokenize_ex("<|im_start|>", 2)) == 1
    assert len(m.tokenize("<|im_start|>", add_bos=False)) > 1
    conv = [("system", SYSTEM), ("user", "Hello")]
    with m.context() as ctx, m.context() as ref:
        reply = ctx.chat(conv, max_tokens=8)
        text = m.format_chat(conv)
        assert text.endswith("<|im_start|>assistant\n")
        ids = m._tokenize_ex(text, 3)
        assert ctx.stats().prompt_tokens == len(ids)
        ref.prefill(ids)
        assert reply == ref.generate(None, max_tokens=8, reset=False)


def test_cli_chat_on_bpe_model(qwen_random):
    cli = build_dir() / "examples" / "free-cli"
    if not cli.exists():
        pytest.skip(f"{cli} not built yet")
    lines = ["Hello", "And then?"]
    res = subprocess.run([str(cli), "-m", qwen_random.path, "--chat", "-n", "8"],
                         input="\n".join(lines).encode() + b"\n", capture_output=True,
                         timeout=120)
    assert res.returncode == 0, res.stderr.decode(errors="replace")
    conv, want = [], b""
    with qwen_random.context() as ctx:
        for line in lines:
            conv.append(("user", line))
            reply = ctx.chat(conv, max_tokens=8)
            conv.append(("assistant", reply))
            want += reply.encode() + b"\n"
    assert res.stdout == want


def test_cli_chat_equals_binding(model):
    cli = build_dir() / "examples" / "free-cli"
    if not cli.exists():
        pytest.skip(f"{cli} not built yet")
    path = str(model_file(LLAMA22))
    lines = ["Where is the river?", "And the sea?"]
    res = subprocess.run([str(cli), "-m", path, "--chat", "--chat-template", "chatml",
                          "-sys", SYSTEM, "-n", "12"],
                         input="\n".join(lines).encode() + b"\n", capture_output=True,
                         timeout=120)
    assert res.returncode == 0, res.stderr.decode(errors="replace")
    conv = [("system", SYSTEM)]
    want = ""
    with model.context() as ctx:
        for line in lines:
            conv.append(("user", line))
            reply = ctx.chat(conv, max_tokens=12, template="chatml")
            conv.append(("assistant", reply))
            want += reply + "\n"
    assert res.stdout.decode("utf-8", errors="replace") == want

    # The shipped models have no template: --chat says so and what to do.
    res = subprocess.run([str(cli), "-m", path, "--chat"], input=b"hi\n",
                         capture_output=True, timeout=60)
    assert res.returncode == 1
    err = res.stderr.decode()
    assert "no chat template" in err and "--chat-template NAME" in err
    res = subprocess.run([str(cli), "-m", path, "-sys", "x"], capture_output=True,
                         timeout=60)
    assert res.returncode == 1 and b"-sys needs --chat" in res.stderr
