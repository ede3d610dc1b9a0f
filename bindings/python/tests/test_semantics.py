"""What a user of llama-cpp-python expects of generate() / stream(): keywords that keep
the context's settings, calls that stand alone, a one-shot Model.generate, and Python's
built-in exceptions for bad arguments (issue 15, items 1-3)."""

import os

import pytest

import libfree
from libfree import _errors

from test_binding import LLAMA22, STORIES, lib, llama22, stories  # noqa: F401 (fixtures)


def test_keywords_keep_the_context_settings(llama22):
    # The context's early exit stays on when generate() is called without keywords.
    with llama22.context(exit_mode="free", threshold=0.5) as ctx:
        ctx.generate("The President shall", max_tokens=32)
        s = ctx.stats()
    assert s.exit_mode is libfree.ExitMode.FREE
    assert s.shallow_exits > 0
    assert s.threshold == pytest.approx(0.5)


def test_call_keywords_apply_to_the_call_only(llama22):
    with llama22.context() as ctx:
        ctx.generate("The President shall", max_tokens=8, exit_mode="free", threshold=0.0,
                     temperature=0.7, seed=3)
        assert ctx.stats().shallow_exits > 0
        p = ctx.params()
        # The default: auto, which a model with a trained exit resolves to VERIFY.
        assert p["exit_mode"] is libfree.ExitMode.AUTO
        assert p["temperature"] == 0.0 and p["seed"] == 0
        assert ctx.stats().exit_mode is libfree.ExitMode.VERIFY
        assert ctx.stats().exit_auto == 1


def test_auto_threshold_and_min_agreement(llama22):
    with llama22.context() as ctx:
        s = ctx.stats()
        assert s.exit_mode is libfree.ExitMode.VERIFY and s.exit_auto == 1
    with llama22.context(exit_mode="verify", threshold=0.5) as ctx:   # no guard
        s = ctx.stats()
        assert s.exit_mode is libfree.ExitMode.VERIFY and s.exit_auto == 0
        assert s.threshold == pytest.approx(0.5)
    with llama22.context(min_agreement=0.99) as ctx:  # selects 'free'
        assert ctx.stats().exit_mode is libfree.ExitMode.FREE
    with llama22.context(exit_mode="free", min_agreement=0.99) as ctx:
        s = ctx.stats()
        assert s.exit_mode is libfree.ExitMode.FREE
        assert s.threshold == pytest.approx(0.8)      # the file's curve: 0.9912 at 0.8
    with pytest.raises(ValueError, match="contradicts"):
        llama22.context(exit_mode="none", min_agreement=0.99)
    # A calibration file (free-calibrate -o) replaces the model's curve.
    calib = os.path.join(os.path.dirname(__file__), "..", "..", "..", "bench", "calib",
                         "free-llama-22M.decode.gguf")
    with llama22.context(exit_mode="free", min_agreement=0.99,
                         calibration_file=calib) as ctx:
        assert ctx.stats().threshold == pytest.approx(0.7)  # bench/calib: 0.9907 at 0.7
        assert "calibration_file" not in ctx.params()
    with pytest.raises(_errors.LibraryIOError, match="calibration file"):
        llama22.context(exit_mode="free", min_agreement=0.99,
                        calibration_file=calib + ".absent")


def test_each_call_stands_alone(stories):
    # A loop of calls on a small context neither chains the texts nor fills the context.
    with stories.context(n_ctx=48) as ctx:
        texts = [ctx.generate("Once upon a time", max_tokens=24) for _ in range(6)]
        assert len(set(texts)) == 1 and texts[0]
        assert ctx.n_past == len(stories.tokenize("Once upon a time")) + 24
    # Sampled text: the same seed gives the same text on every call.
    with stories.context(temperature=0.9, seed=11) as ctx:
        a = ctx.generate("Once upon a time", max_tokens=24)
        b = ctx.generate("Once upon a time", max_tokens=24)
        c = ctx.generate("Once upon a time", max_tokens=24, seed=12)
        d = list(ctx.stream("Once upon a time", max_tokens=24))
    assert a == b == "".join(d)
    assert a != c


def test_continuing_is_explicit(stories):
    with stories.context() as ctx:
        whole = ctx.generate("Once upon a time", max_tokens=20)
        first = ctx.generate("Once upon a time", max_tokens=12)
        rest = ctx.generate(None, max_tokens=8, reset=False)
        assert first + rest == whole
        more = "".join(ctx.stream(None, max_tokens=4, reset=False))
        assert more
        assert ctx.n_past == len(stories.tokenize("Once upon a time")) + 24


def test_model_generate_is_one_shot(stories, llama22):
    with stories.context() as ctx:
        want = ctx.generate("Once upon a time", max_tokens=16)
    assert stories.generate("Once upon a time", max_tokens=16) == want
    assert "".join(stories.stream("Once upon a time", max_tokens=16)) == want
    with llama22.context(exit_mode="verify", threshold=0.3) as ctx:
        want = ctx.generate("In the beginning", max_tokens=16)
    assert llama22.generate("In the beginning", max_tokens=16, exit_mode="verify",
                            threshold=0.3) == want


def test_bad_argument_types_raise_type_error(stories):
    with stories.context() as ctx:
        for bad in (123, 1.5, ["Once"]):
            with pytest.raises(TypeError, match="prompt must be str or bytes"):
                ctx.generate(bad, max_tokens=2)
            with pytest.raises(TypeError):
                ctx.stream(bad, max_tokens=2)
        with pytest.raises(TypeError):
            ctx.eval("Once")
        with pytest.raises(TypeError):
            ctx.prefill([1, "2"])
        with pytest.raises(TypeError):
            ctx.generate("Once", max_tokens="8")
        with pytest.raises(TypeError):
            ctx.generate("Once", temperature="hot")
        with pytest.raises(TypeError):
            ctx.generate("Once", no_such_param=1)
    with pytest.raises(TypeError):
        stories.tokenize(123)
    assert stories.generate(b"Once upon a time", max_tokens=4) == \
        stories.generate("Once upon a time", max_tokens=4)


def test_bad_argument_values_raise_value_error(stories):
    with stories.context() as ctx:
        with pytest.raises(ValueError):
            ctx.generate("Once", max_tokens=-5)
        with pytest.raises(ValueError):
            ctx.generate("Once", exit_mode="sometimes")
        # Out-of-range values are the library's verdict: InvalidArgument, a ValueError
        # carrying the status, and the context is unchanged.
        with pytest.raises(ValueError) as e:
            ctx.generate("Once", top_p=2.0)
        assert isinstance(e.value, libfree.InvalidArgument)
        assert e.value.status is libfree.Status.ERR_INVALID_ARG
        assert "top_p" in str(e.value)
        assert ctx.params()["top_p"] == 1.0
        with pytest.raises(ValueError):
            ctx.set_params(n_ctx=8)
        with pytest.raises(libfree.TokenError) as e:
            ctx.eval([1, stories.n_vocab])
        assert isinstance(e.value, ValueError)
    with pytest.raises(libfree.TokenError):
        stories.detokenize([1, 2**40])


def test_exit_only_keywords_select_early_exit(stories):
    # As free-cli: threshold / adaptive select 'free' unless an exit mode is given with
    # them; 'none' with them is a contradiction.
    with pytest.raises(ValueError, match="contradicts"):
        stories.context(exit_mode="none", threshold=0.5)
    with pytest.raises(ValueError, match="contradicts"):
        stories.generate("Once", max_tokens=2, exit_mode="none", adaptive=True)
    with stories.context(threshold=0.5) as ctx:
        assert ctx.params()["exit_mode"] is libfree.ExitMode.FREE
    with stories.context(exit_mode="verify", threshold=0.5) as ctx:
        assert ctx.params()["exit_mode"] is libfree.ExitMode.VERIFY
    with stories.context() as ctx:
        ctx.generate("Once", max_tokens=2, threshold=0.5)
        assert ctx.stats().exit_mode is libfree.ExitMode.NONE   # for that call only
        assert ctx.params()["exit_mode"] is libfree.ExitMode.AUTO


def test_error_classes_carry_the_status(lib):
    for status in libfree.Status:
        if status is libfree.Status.OK:
            continue
        cls = _errors.error_class(status)
        assert issubclass(cls, libfree.FreeError) and cls is not libfree.FreeError
        e = _errors._make_error(status, "x", "free_something")
        assert e.status is status
    assert issubclass(libfree.LibraryIOError, OSError)
    assert issubclass(libfree.OutOfMemory, MemoryError)
    assert issubclass(libfree.FormatError, ValueError)
    assert _errors.error_class(-99) is libfree.FreeError


def test_messages_do_not_repeat_the_function(stories):
    with stories.context() as ctx:
        with pytest.raises(libfree.StateError) as e:
            ctx.step()
        text = str(e.value)
        assert text.count("free_step") <= 1
        with pytest.raises(libfree.FreeError) as e:
            ctx.set_params(top_k=-1)
        assert str(e.value).count("free_ctx_set_params") <= 1
    e = _errors._make_error(-1, "free_step: NULL argument", "free_step")
    assert str(e).count("free_step") == 1


def test_stats_exit_mode_is_an_enum(stories):
    with stories.context(exit_mode="verify") as ctx:
        ctx.generate("Once", max_tokens=4)
        assert ctx.stats().exit_mode is libfree.ExitMode.VERIFY


# -- sampling controls (item 6) ---------------------------------------------------------

def test_stop_strings(stories):
    with stories.context() as ctx:
        full = ctx.generate("Once upon a time", max_tokens=60)
        assert ctx.finish_reason is libfree.Finish.LENGTH
        stop = full[40:46]
        cut = full[:full.index(stop)]
        assert ctx.generate("Once upon a time", max_tokens=60, stop=stop) == cut
        assert ctx.finish_reason is libfree.Finish.STOP
        assert "".join(ctx.stream("Once upon a time", max_tokens=60,
                                  stop=["never", stop])) == cut
        assert ctx.params()["stop"] == []           # the call's setting only
        ctx.set_params(stop=[stop, "zz"])
        assert ctx.params()["stop"] == [stop, "zz"]
        assert ctx.generate("Once upon a time", max_tokens=60) == cut
        ctx.set_params(stop=[])
        assert ctx.generate("Once upon a time", max_tokens=60) == full
        with pytest.raises(TypeError):
            ctx.generate("Once", stop=3)
        with pytest.raises(ValueError):
            ctx.generate("Once", stop=[""])


def test_penalties_and_min_p(stories):
    with stories.context() as ctx:
        plain = ctx.generate("Once upon a time", max_tokens=48)
        pen = ctx.generate("Once upon a time", max_tokens=48, repeat_penalty=1.5,
                           frequency_penalty=0.5, repeat_last_n=16)
        assert pen != plain
        assert ctx.generate("Once upon a time", max_tokens=48) == plain
        assert ctx.params()["repeat_penalty"] == 1.0
        sampled = ctx.generate("Once upon a time", max_tokens=32, temperature=1.0, seed=4,
                               min_p=0.2)
        assert sampled == ctx.generate("Once upon a time", max_tokens=32, temperature=1.0,
                                       seed=4, min_p=0.2)
        with pytest.raises(ValueError):
            ctx.generate("Once", min_p=2.0)
    with stories.context(exit_mode="verify", threshold=0.3, repeat_penalty=1.5,
                         repeat_last_n=16, frequency_penalty=0.5) as ctx:
        assert ctx.generate("Once upon a time", max_tokens=48) == pen


def test_cli_sampling_flags_equal_python(stories):
    import subprocess
    from test_binding import build_dir
    from conftest import model_file
    cli = build_dir() / "examples" / "free-cli"
    if not cli.exists():
        pytest.skip(f"{cli} not built yet")
    kw = dict(repeat_penalty=1.4, repeat_last_n=20, frequency_penalty=0.3,
              presence_penalty=0.2)
    with stories.context(**kw) as ctx:
        full = ctx.generate("Once upon a time", max_tokens=50)
        stop = full[30:35]
        want = ctx.generate("Once upon a time", max_tokens=50, stop=["xyzzy", stop])
    cmd = [str(cli), "-m", str(model_file(STORIES)), "-p", "Once upon a time", "-n", "50",
           "--repeat-penalty", "1.4", "--repeat-last-n", "20", "--frequency-penalty", "0.3",
           "--presence-penalty", "0.2", "--stop", "xyzzy", "--stop", stop, "--stats"]
    res = subprocess.run(cmd, capture_output=True, timeout=60)
    assert res.returncode == 0, res.stderr.decode(errors="replace")
    assert res.stdout.decode() == "Once upon a time" + want + "\n"
    assert '"finish": "stop"' in res.stderr.decode()


# -- prompt reuse (item 5) ----------------------------------------------------------------

def test_calls_reuse_the_cached_prefix(llama22):
    text = ("It is a truth universally acknowledged, that a single man in possession of a "
            "good fortune, must be in want of a wife.")
    n = len(llama22.tokenize(text))
    with llama22.context(exit_mode="free", threshold=0.4) as ctx:
        first = ctx.generate(text, max_tokens=16)
        assert ctx.stats().reused_tokens == 0
        assert ctx.generate(text, max_tokens=16) == first
        assert ctx.stats().reused_tokens == n - 1
        edited = ctx.generate(text[:-1] + "!", max_tokens=16)
        assert edited == llama22.generate(text[:-1] + "!", max_tokens=16, exit_mode="free",
                                          threshold=0.4)


def test_truncate_continues(stories):
    with stories.context() as ctx:
        whole = ctx.generate("Once upon a time", max_tokens=20)
        n = len(stories.tokenize("Once upon a time"))
        ctx.truncate(n + 8)
        assert ctx.n_past == n + 8
        rest = ctx.generate(None, max_tokens=12, reset=False)
        first = ctx.generate("Once upon a time", max_tokens=8)
        assert first + rest == whole
        with pytest.raises(ValueError):
            ctx.truncate(-1)
        with pytest.raises(libfree.InvalidArgument):
            ctx.truncate(10_000)


# -- state (item 7) -------------------------------------------------------------------------

def test_state_roundtrip(llama22):
    kw = dict(exit_mode="free", threshold=0.3, temperature=0.8, seed=5)
    with llama22.context(**kw) as a, llama22.context(**kw) as b:
        a.generate("The President shall", max_tokens=10)
        state = a.save_state()
        more = a.generate(None, max_tokens=20, reset=False)
        b.load_state(state)
        assert b.generate(None, max_tokens=20, reset=False) == more
        with pytest.raises(libfree.FormatError):
            b.load_state(state[:-1])
        with pytest.raises(TypeError):
            b.load_state("text")
