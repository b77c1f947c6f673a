"""The language through the kernel: every golden script of tests/lang gives, over the wire,
the same text as `loupe run`; completion, inspection and bad input as a front end sees
them."""
import pathlib

import pytest

from client import RawKernel
from conftest import KERNEL, ROOT

LANG = ROOT / "tests" / "lang"
GOLDENS = sorted(p.stem for p in LANG.glob("*.loupe"))
# What only a terminal has: end of input. (Through the kernel an input_reply always has a value.)
CLI_ONLY = {"err_input_eof"}


@pytest.fixture(scope="module")
def shared():
    k = RawKernel([str(KERNEL)])
    k.wait_ready()
    yield k
    k.close()


def transcript(k, code, stdin_lines=()):
    """Run one cell; rebuild the text `loupe run` prints from the IOPub messages."""
    msg_id = k.send(k.shell, "execute_request", dict(code=code, silent=False, store_history=True,
                                                      user_expressions={}, allow_stdin=True,
                                                      stop_on_error=True))
    lines = list(stdin_lines)
    reply = None
    while reply is None:
        if k.stdin.poll(10):
            req = k.recv(k.stdin)
            assert req["msg_type"] == "input_request"
            k.send(k.stdin, "input_reply", {"value": lines.pop(0) if lines else ""})
        if k.shell.poll(10):
            r = k.recv(k.shell)
            if r["parent_header"]["msg_id"] == msg_id:
                reply = r
    text = []
    for m in k.iopub_until_idle(msg_id):
        c = m["content"]
        if m["msg_type"] == "stream":
            text.append(c["text"])
        elif m["msg_type"] in ("display_data", "execute_result", "update_display_data"):
            text.append(c["data"]["text/plain"] + "\n")
        elif m["msg_type"] == "error":
            text.extend(line + "\n" for line in c["traceback"])
    # `NAME?` goes to the pager: a payload of the reply, which `loupe run` prints in place
    for p in reply["content"].get("payload", []):
        if p.get("source") == "page":
            text.append(p["data"]["text/plain"] + "\n")
    return reply, "".join(text)


@pytest.mark.parametrize("name", GOLDENS)
def test_golden_through_kernel(name):
    code = (LANG / f"{name}.loupe").read_text(encoding="utf-8", errors="surrogateescape")
    if name in CLI_ONLY:
        pytest.skip("end of input exists only for `loupe run`")
    if any("\udc80" <= ch <= "\udcff" for ch in code):
        pytest.skip("invalid UTF-8 cannot travel in a JSON message; covered by test_bad_input")
    stdin = []
    if (LANG / f"{name}.in").exists():
        stdin = (LANG / f"{name}.in").read_text(encoding="utf-8").splitlines()
    want = (LANG / f"{name}.out").read_text(encoding="utf-8", errors="surrogateescape")
    k = RawKernel([str(KERNEL)], cwd=LANG)     # goldens name files relative to tests/lang
    try:
        k.wait_ready()
        _, got = transcript(k, code, stdin)
    finally:
        k.close()
    assert got == want


def test_completion_commands_and_options(shared):
    r = shared.request(shared.shell, "complete_request", {"code": "sle", "cursor_pos": 3})
    assert "sleep" in r["content"]["matches"]
    assert r["content"]["cursor_start"] == 0 and r["content"]["cursor_end"] == 3
    code = 'print "x" st'
    r = shared.request(shared.shell, "complete_request", {"code": code, "cursor_pos": len(code)})
    assert "stderr=" in r["content"]["matches"]
    types = r["content"]["metadata"]["_jupyter_types_experimental"]
    assert {"text": "stderr=", "type": "option"}.items() <= next(t for t in types if t["text"] == "stderr=").items()


def test_completion_counts_code_points(shared):
    transcript(shared, "東京の変数 = 1\n東京の値 = 2")
    code = 'print "日本" 東京の'
    r = shared.request(shared.shell, "complete_request", {"code": code, "cursor_pos": len(code)})
    c = r["content"]
    assert set(c["matches"]) >= {"東京の変数", "東京の値"}
    assert c["cursor_end"] == len(code)                      # code points, not bytes
    assert c["cursor_start"] == len(code) - len("東京の")


def test_completion_variables(shared):
    transcript(shared, "learning_rate = 0.1")
    r = shared.request(shared.shell, "complete_request", {"code": "print learn", "cursor_pos": 11})
    assert "learning_rate" in r["content"]["matches"]


def test_inspection(shared):
    r = shared.request(shared.shell, "inspect_request", {"code": "sleep 1", "cursor_pos": 2, "detail_level": 0})
    c = r["content"]
    assert c["found"] and "sleep" in c["data"]["text/plain"]
    transcript(shared, "weights = [1, 2, 3]")
    r = shared.request(shared.shell, "inspect_request", {"code": "weights", "cursor_pos": 3, "detail_level": 0})
    assert r["content"]["found"] and "[1, 2, 3]" in r["content"]["data"]["text/plain"]
    r = shared.request(shared.shell, "inspect_request", {"code": "   ", "cursor_pos": 1, "detail_level": 0})
    assert r["content"]["found"] is False


def test_is_complete(shared):
    def ask(code):
        return shared.request(shared.shell, "is_complete_request", {"code": code})["content"]
    assert ask("x = 1")["status"] == "complete"
    inc = ask("repeat 3 {")
    assert inc["status"] == "incomplete" and inc["indent"].strip() == "" and len(inc["indent"]) > 0
    assert ask('s = "abc')["status"] == "incomplete"
    assert ask("x = )")["status"] == "invalid"


@pytest.mark.parametrize("code, ename", [
    ("x = " + "[" * 10000 + "]" * 10000, "SyntaxError"),
    ("print 1\x00", "SyntaxError"),
    ("x = 1 +", "SyntaxError"),
])
def test_bad_input_then_next_cell(shared, code, ename):
    reply, _ = transcript(shared, code)
    assert reply["content"]["status"] == "error" and reply["content"]["ename"] == ename
    reply, text = transcript(shared, "1 + 1")
    assert reply["content"]["status"] == "ok" and text == "2\n"


def test_ten_megabyte_cell(shared):
    code = "x = 0\n" + "x = x + 1\n" * (10 * 1024 * 1024 // 10) + "x"
    reply, text = transcript(shared, code)
    assert reply["content"]["status"] == "ok"
    assert text == f"{10 * 1024 * 1024 // 10}\n"


def test_failed_statement_changes_nothing(shared):
    transcript(shared, "a = 1")
    reply, _ = transcript(shared, "a = 2\nb = undefined_thing\nc = 3")
    assert reply["content"]["status"] == "error"
    _, text = transcript(shared, "a")
    assert text == "2\n"                  # the statement before the failure kept its effect
    reply, _ = transcript(shared, "c")
    assert reply["content"]["ename"] == "NameError"   # the one after it never ran


def test_completion_and_inspection_walk_the_module_tree(shared):
    transcript(shared, f'model = load "{ROOT}/tests/fixtures/models/llama"')
    code = "model.layers[0].self_attn."
    r = shared.request(shared.shell, "complete_request", {"code": code, "cursor_pos": len(code)})
    c = r["content"]
    assert {"q_proj", "k_proj", "v_proj", "o_proj"} <= set(c["matches"])
    assert c["cursor_start"] == c["cursor_end"] == len(code)
    code = "model.layers.1.mlp.gate"
    r = shared.request(shared.shell, "complete_request", {"code": code, "cursor_pos": len(code)})
    assert r["content"]["matches"] == ["gate_proj"]
    code = "print model.layers[0].self_attn.q_proj"
    r = shared.request(shared.shell, "inspect_request", {"code": code, "cursor_pos": len(code) - 2,
                                                          "detail_level": 0})
    text = r["content"]["data"]["text/plain"]
    assert r["content"]["found"] and "Linear 32 → 32" in text and "Query projection" in text
