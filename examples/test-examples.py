#!/usr/bin/env python3
"""Runs one example program and checks what it prints (meson suite 'examples').

    test-examples.py embed|embed-cpp|game|editor|cli-tokenize EXECUTABLE MODELS_DIR

Only the standard library: meson's own Python runs this.
"""
import json
import os
import subprocess
import sys
import time

TIMEOUT = 120


def fail(msg):
    print("FAIL: " + msg)
    sys.exit(1)


def check(cond, msg):
    if not cond:
        fail(msg)


def run(args, **kw):
    p = subprocess.run(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=TIMEOUT,
                       **kw)
    return p.returncode, p.stdout.decode("utf-8"), p.stderr.decode("utf-8")


def test_embed(exe, models):
    model = os.path.join(models, "free-llama-22M.gguf")
    prompt = "In the beginning"
    rc, out, err = run([exe, model, prompt, "24"])
    check(rc == 0, "embed exited %d: %s" % (rc, err))
    check(out.startswith(prompt), "the completion does not start with the prompt: %r" % out)
    lines = out.rstrip("\n").split("\n")
    check(len(lines[0]) > len(prompt), "no text was generated: %r" % out)
    stats = lines[-1]
    check(stats.startswith("stats: 24 tokens in "), "bad stats line: %r" % stats)
    check(" tokens/s" in stats and " layers per token" in stats, "bad stats line: %r" % stats)
    # A missing model fails cleanly with the path in the message.
    rc, out, err = run([exe, os.path.join(models, "no-such-model.gguf")])
    check(rc == 1, "a missing model should exit 1, not %d" % rc)
    check("no-such-model.gguf" in err and "input/output error" in err,
          "the error does not name the file: %r" % err)


def test_embed_cpp(exe, models):
    model = os.path.join(models, "free-llama-22M.gguf")
    rc, out, err = run([exe, model, "The President shall", "16"])
    check(rc == 0, "embed-cpp exited %d: %s" % (rc, err))
    lines = out.split("\n")
    check(lines[0].startswith("model: llama, 12 layers"), "bad model line: %r" % lines[0])
    check(lines[1].startswith("The President shall") and len(lines[1]) > 20,
          "bad completion line: %r" % lines[1])
    check(lines[2].startswith("then: "), "bad continuation line: %r" % lines[2])
    check(lines[3].startswith("stats: 16 streamed tokens") and " 24 in all" in lines[3],
          "bad stats line: %r" % lines[3])
    check(lines[4] == "expected error: invalid argument: top_p 2 must be in (0, 1] "
          "(status -1)", "bad error line: %r" % lines[4])
    rc, out, err = run([exe, os.path.join(models, "no-such-model.gguf")])
    check(rc == 1 and "no-such-model.gguf" in err, "a missing model: rc %d, %r" % (rc, err))


def test_game(exe, models):
    model = os.path.join(models, "free-llama-22M.gguf")
    rc, out, err = run([exe, "-m", model, "-c", "3", "--max-tokens", "16", "--json"])
    check(rc == 0, "game-host exited %d: %s" % (rc, err))
    lines = out.strip().split("\n")
    check(len(lines) == 1, "--json should print one line, got %d" % len(lines))
    g = json.loads(lines[0])
    chars = g["characters"]
    check(len(chars) == 3, "expected 3 characters, got %d" % len(chars))
    check(len({c["name"] for c in chars}) == 3, "character names are not distinct")
    total = 0
    for c in chars:
        check(c["error"] is None, "%s failed: %s" % (c["name"], c["error"]))
        check(1 <= c["line_tokens"] <= 16, "%s: line_tokens %d" % (c["name"], c["line_tokens"]))
        check(c["tokens"] >= c["line_tokens"], "%s: tokens < line tokens" % c["name"])
        check(c["line"].strip() != "" and "\n" not in c["line"],
              "%s: bad line %r" % (c["name"], c["line"]))
        check(c["tokens_per_s"] > 0 and c["busy_ms"] > 0, "%s: no timing" % c["name"])
        check(1 <= c["frames"] <= g["frames"] and c["finished_frame"] <= g["frames"],
              "%s: frames %d of %d" % (c["name"], c["frames"], g["frames"]))
        # Every frame runs at least one step, so a line needs at most one frame per token.
        check(c["frames"] <= c["tokens"], "%s: more frames than tokens" % c["name"])
        total += c["tokens"]
    check(g["tokens"] == total, "total tokens %d != sum %d" % (g["tokens"], total))
    check(g["tokens_per_s"] > 0 and g["wall_ms"] > 0, "no total rate")

    # The table form, with the lossless mode and two characters.
    rc, out, err = run([exe, "-m", model, "-c", "2", "--max-tokens", "8", "--exit", "verify"])
    check(rc == 0, "game-host (table) exited %d: %s" % (rc, err))
    check(sum(1 for l in out.split("\n") if l.startswith("[frame")) == 2,
          "expected 2 lines of dialogue:\n" + out)
    check("tokens/s" in out and "\ntotal: " in out, "no stats table:\n" + out)
    # A budget below 0.1 ms is printed as given, not rounded to "0.0 ms".
    rc, out, err = run([exe, "-m", model, "-c", "1", "--max-tokens", "2", "--budget-ms", "0.01"])
    check(rc == 0 and "0.01 ms budget" in out, "--budget-ms 0.01: %d %r" % (rc, out[-300:]))
    rc, out, err = run([exe, "-m", model, "--exit", "sideways"])
    check(rc == 2 and "--exit" in err, "a bad option should exit 2: %d %r" % (rc, err))

    # The characters are stepped together with free_batch_step; --alone steps them one by
    # one with free_step: the same lines, token for token, in every exit mode, greedy and
    # sampled.
    for extra in (["--exit", "free"], ["--exit", "free", "--temp", "0.8", "--seed", "3"],
                  ["--exit", "verify", "--threshold", "0.3"],
                  ["--exit", "verify", "--temp", "0.9"], ["--exit", "none", "--temp", "0.7"]):
        lines = []
        for alone in ([], ["--alone"]):
            rc, out, err = run([exe, "-m", model, "-c", "5", "--max-tokens", "24", "--json"] +
                               extra + alone)
            check(rc == 0, "game-host %s exited %d: %s" % (" ".join(extra + alone), rc, err))
            lines.append([(c["name"], c["line"], c["line_tokens"], c["eos"])
                          for c in json.loads(out)["characters"]])
        check(lines[0] == lines[1], "game-host %s: batched lines differ from --alone:\n%r\n%r"
              % (" ".join(extra), lines[0], lines[1]))


class Editor:
    def __init__(self, exe, model, *extra):
        self.p = subprocess.Popen([exe, "-m", model, "-t", "1"] + list(extra),
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        self.deadline = time.monotonic() + TIMEOUT

    def send(self, obj_or_text):
        line = obj_or_text if isinstance(obj_or_text, (str, bytes)) else json.dumps(obj_or_text)
        if isinstance(line, str):
            line = line.encode("utf-8")
        self.p.stdin.write(line + b"\n")
        self.p.stdin.flush()

    def read(self):
        check(time.monotonic() < self.deadline, "editor-host took too long")
        raw = self.p.stdout.readline()
        check(raw.endswith(b"\n"), "editor-host closed its output early")
        # Every response is one line of valid UTF-8 holding one JSON object.
        return json.loads(raw.decode("utf-8"))

    def until_done(self, rid, on_text=None):
        """Text of request rid and its final response (other ids' lines are collected)."""
        text, others = [], []
        while True:
            r = self.read()
            if r.get("id") != rid:
                others.append(r)
                continue
            if r["done"]:
                return "".join(text), r, others
            check(isinstance(r["text"], str) and r["text"] != "", "empty text response")
            text.append(r["text"])
            if on_text:
                on_text(len(text))

    def close(self):
        self.p.stdin.close()
        rest = self.p.stdout.read()
        rc = self.p.wait(timeout=TIMEOUT)
        check(rc == 0, "editor-host exited %d" % rc)
        check(rest == b"", "unexpected output at the end: %r" % rest)


def test_editor(exe, models):
    model = os.path.join(models, "free-code-22M.gguf")
    ed = Editor(exe, model)

    # A plain completion with a stop string.
    req = {"id": 1, "prefix": "def add(a, b):\n", "max_tokens": 48, "stop": ["\n\n"]}
    ed.send(req)
    text1, done, _ = ed.until_done(1)
    check(done["reason"] in ("stop", "length", "eos"), "request 1: %r" % done)
    check(0 < done["tokens"] <= 48, "request 1: tokens %r" % done["tokens"])
    check(done["prompt_tokens"] > 1 and not done["truncated"], "request 1: %r" % done)
    check("\n\n" not in text1, "the stop string was sent: %r" % text1)
    check(done["ms"] > 0 and done["tokens_per_s"] > 0, "request 1: no timing %r" % done)
    if done["reason"] == "length":
        check(done["tokens"] == 48, "length with %d tokens" % done["tokens"])

    # The same request again gives the same text: each request starts from a reset state.
    req["id"] = 2
    ed.send(req)
    text2, done2, _ = ed.until_done(2)
    check(text2 == text1 and done2["reason"] == done["reason"], "a repeated request differs")

    # The lossless mode gives the full model's greedy text.
    ed.send({"id": 3, "prefix": "import os\n\n\ndef main(", "max_tokens": 24, "exit": "none"})
    full, d3, _ = ed.until_done(3)
    ed.send({"id": 4, "prefix": "import os\n\n\ndef main(", "max_tokens": 24, "exit": "verify",
             "threshold": 0.3})
    ver, d4, _ = ed.until_done(4)
    check(full == ver and d3["tokens"] == d4["tokens"], "verify %r != none %r" % (ver, full))

    # A one-line stop: the text ends before the first newline.
    ed.send({"id": 5, "prefix": "class Point:\n    def __init__(self, x, y):\n",
             "max_tokens": 64, "stop": ["\n"]})
    t5, d5, _ = ed.until_done(5)
    check(d5["reason"] == "stop" and "\n" not in t5, "request 5: %r %r" % (t5, d5))

    # Malformed lines get an error response and the service goes on.
    bad = [
        "garbage",
        "{\"id\": 6}",
        "{\"id\": \"six\", \"prefix\": \"\"}",
        "{\"id\": 6, \"prefix\": \"x\", \"max_tokens\": -1}",
        "{\"id\": 6, \"prefix\": \"\\ud800\"}",
        "{\"id\": 6, \"prefix\": \"x\"} trailing",
        "{\"id\": 6, \"prefix\": \"x\", \"stop\": [1]}",
        "{\"id\": 6, \"prefix\": \"x\", \"exit\": \"sideways\"}",
        "{\"id\": 6, \"prefix\": \"unterminated}",
        b"{\"id\": 6, \"prefix\": \"\xff\"}",
        "{\"id\": 6, \"prefix\": \"x\", \"max_tokens\": 600}",
        "{\"id\": 6, \"deep\": " + "[" * 100000,
    ]
    for b in bad:
        ed.send(b)
        r = ed.read()
        check(r["done"] is True and r["reason"] == "error" and r["error"],
              "no error for %r: %r" % (b[:40], r))
    # An error about the whole request names no byte position; a syntax error does.
    ed.send("{\"id\": 6}")
    r = ed.read()
    check(r["error"].endswith("the request has no string \"prefix\""), "no prefix: %r" % r)
    ed.send("garbage")
    check(" at byte 0" in ed.read()["error"], "a syntax error names its byte")
    ed.send("x" * ((1 << 20) + 10))  # longer than the 1 MiB limit
    r = ed.read()
    check(r["reason"] == "error" and "1 MiB" in r["error"], "overlong line: %r" % r)

    # Escapes and non-ASCII text round-trip; unknown keys are ignored.
    ed.send({"id": 7, "prefix": "s = \"caf\u00e9 \U0001F600\"\n# \t\\", "max_tokens": 8,
             "extra": {"nested": [1, 2.5e3, None, True, "x"]}})
    _, d7, _ = ed.until_done(7)
    check(d7["reason"] in ("length", "eos") and d7["tokens"] <= 8, "request 7: %r" % d7)

    # A prefix longer than the context keeps its end.
    ed.send({"id": 8, "prefix": "x = 1\n" * 400, "max_tokens": 12})
    _, d8, _ = ed.until_done(8)
    check(d8["truncated"] is True and d8["prompt_tokens"] == 512 - 12, "request 8: %r" % d8)

    # Cancellation while generating, and of a request still in the queue.
    ed.send({"id": 9, "prefix": "def parse(text):\n", "max_tokens": 400})
    ed.send({"id": 10, "prefix": "x", "max_tokens": 4})

    def cancel_after_three(n):
        if n == 3:
            ed.send({"cancel": 10})
            ed.send({"cancel": 9})

    t9, d9, others = ed.until_done(9, cancel_after_three)
    check(d9["reason"] == "cancelled" and 3 <= d9["tokens"] < 400, "request 9: %r" % d9)
    check(others == [{"id": 10, "done": True, "reason": "cancelled", "tokens": 0}],
          "request 10 should be cancelled in the queue: %r" % others)

    # The service still works after a cancellation; an empty prefix starts from BOS.
    ed.send({"id": 11, "prefix": "", "max_tokens": 4})
    _, d11, _ = ed.until_done(11)
    check(d11["reason"] in ("length", "eos") and d11["prompt_tokens"] == 1, "request 11: %r" % d11)
    ed.close()


def test_cli_tokenize(exe, models):
    """free-cli --tokenize: decimal ids separated by single spaces on one line."""
    import re
    model = os.path.join(models, "free-llama-22M.gguf")

    def ids(*args):
        rc, out, err = run([exe, "-m", model, "--tokenize"] + list(args))
        check(rc == 0, "free-cli --tokenize %r exited %d: %s" % (args, rc, err))
        check(out.endswith("\n") and out.count("\n") == 1, "not one line: %r" % out)
        line = out[:-1]
        check(line == "" or re.fullmatch(r"[0-9]+( [0-9]+)*", line), "bad format: %r" % out)
        return [int(x) for x in line.split()]

    plain = ids("-p", "Hello world")
    check(len(plain) > 1 and plain[0] != 1, "no BOS without --add-special: %r" % plain)
    check(ids("-p", "Hello world", "--add-special") == [1] + plain, "--add-special adds BOS")
    check(ids("-p", "") == [], "empty text gives an empty line")
    # "<s>" is text unless --parse-special, then it is BOS (1) and "</s>" EOS (2).
    special = ids("-p", "<s>x</s>", "--parse-special")
    check(special[0] == 1 and special[-1] == 2 and len(special) == 3, "%r" % special)
    check(1 not in ids("-p", "<s>x</s>"), "control text must stay text")
    rc, out, err = run([exe, "-m", os.path.join(models, "no-such.gguf"), "--tokenize",
                        "-p", "x"])
    check(rc == 1 and "no-such.gguf" in err, "a missing file: rc %d, %r" % (rc, err))


def main():
    if len(sys.argv) != 4:
        fail(__doc__)
    name, exe, models = sys.argv[1:]
    tests = {"embed": test_embed, "embed-cpp": test_embed_cpp, "game": test_game,
             "editor": test_editor, "cli-tokenize": test_cli_tokenize}
    check(name in tests, "unknown test " + name)
    t0 = time.monotonic()
    tests[name](exe, models)
    print("OK: %s (%.1f s)" % (name, time.monotonic() - t0))


if __name__ == "__main__":
    main()
