"""What no well-behaved client sends, and what a user does to a running cell: the kernel
must drop bad messages, answer the next good one, stop cells on interrupt and shut down
on request."""
import json
import os
import signal
import time

import pytest
import zmq

from client import RawKernel
from conftest import KERNEL


@pytest.fixture
def k():
    kern = RawKernel([str(KERNEL)])
    kern.wait_ready()
    yield kern
    kern.close()


def alive(k):
    r = k.request(k.shell, "kernel_info_request", {}, timeout=3)
    return r is not None and r["content"]["status"] == "ok"


def test_bad_signature_is_not_executed(k):
    k.execute("x = 1")
    k.send(k.shell, "execute_request", {"code": "x = 2", "silent": False}, sign=False)
    assert k.recv(k.shell, timeout=1.0) is None          # dropped: no reply at all
    reply, out = k.execute("x")
    results = [m for m in out if m["msg_type"] == "execute_result"]
    assert results[0]["content"]["data"]["text/plain"] == "1"


def test_truncated_and_garbage_messages(k):
    k.shell.send_multipart([b"<IDS|MSG>", b"sig"])                     # truncated
    k.shell.send_multipart([b"no delimiter at all"])
    k.shell.send_multipart([b"\xff\xfe"] * 3)
    _, frames = k.frames("kernel_info_request", {})
    frames[-1] = b"{not json"
    frames[1] = k.sign(frames[2:6])
    k.shell.send_multipart(frames)                                    # signed, invalid JSON
    assert alive(k)


def test_unreadable_content_is_answered(k):
    msg_id, frames = k.frames("execute_request", {})
    frames[-1] = b'{"code": "\\udcff"}'      # a lone surrogate: not valid JSON text for UTF-8
    frames[1] = k.sign(frames[2:6])
    k.shell.send_multipart(frames)
    r = k.recv(k.shell, timeout=5)
    assert r["parent_header"]["msg_id"] == msg_id
    assert r["content"]["status"] == "error" and r["content"]["ename"] == "InvalidMessage"
    assert alive(k)


def test_unknown_msg_type(k):
    msg_id = k.send(k.shell, "frobnicate_request", {})
    states = [m["content"]["execution_state"] for m in k.iopub_until_idle(msg_id) if m["msg_type"] == "status"]
    assert states == ["busy", "idle"]
    assert alive(k)


def test_fifty_megabyte_message(k):
    msg_id, frames = k.frames("kernel_info_request", {})
    k.shell.send_multipart(frames + [b"x" * (50 * 1024 * 1024)])    # a 50 MB buffer frame
    r = k.recv(k.shell, timeout=20)
    assert r and r["parent_header"]["msg_id"] == msg_id
    big = "# " + "y" * (50 * 1024 * 1024)                             # a 50 MB cell (a comment)
    reply, _ = k.execute(big + "\n7", timeout=60)
    assert reply["content"]["status"] == "ok"
    assert alive(k)


def test_client_disconnects_mid_request(k):
    gone = k.ctx.socket(zmq.DEALER)
    gone.setsockopt(zmq.LINGER, 1000)
    gone.connect(k.addr("shell_port"))
    _, frames = k.frames("execute_request", {"code": "sleep 0.3", "silent": False})
    gone.send_multipart(frames)
    gone.close()                                     # its reply has nowhere to go
    time.sleep(0.5)
    assert alive(k)


def test_interrupt_message_keeps_state(k):
    k.execute("x = 41")
    msg_id = k.send(k.shell, "execute_request", {"code": "sleep 30", "silent": False, "stop_on_error": False})
    time.sleep(0.3)
    t0 = time.perf_counter()
    r = k.request(k.control, "interrupt_request", {})
    assert r["content"]["status"] == "ok"
    reply = k.recv(k.shell, timeout=5)
    assert time.perf_counter() - t0 < 1.0
    assert reply["parent_header"]["msg_id"] == msg_id
    assert reply["content"]["status"] == "error"
    assert reply["content"]["ename"] == "Interrupted"
    _, out = k.execute("x + 1")
    assert [m["content"]["data"]["text/plain"] for m in out if m["msg_type"] == "execute_result"] == ["42"]


def test_interrupt_by_sigint(k):
    k.execute("y = 7")
    k.send(k.shell, "execute_request", {"code": "sleep 30", "silent": False, "stop_on_error": False})
    time.sleep(0.3)
    t0 = time.perf_counter()
    os.kill(k.proc.pid, signal.SIGINT)
    reply = k.recv(k.shell, timeout=5)
    assert time.perf_counter() - t0 < 1.0
    assert reply["content"]["ename"] == "Interrupted"
    _, out = k.execute("y")
    assert [m["content"]["data"]["text/plain"] for m in out if m["msg_type"] == "execute_result"] == ["7"]


def test_interrupt_between_cells_is_harmless(k):
    k.request(k.control, "interrupt_request", {})
    reply, _ = k.execute("1")
    assert reply["content"]["status"] == "ok"


@pytest.mark.parametrize("restart", [False, True])
def test_shutdown_replies_then_exits(restart):
    k = RawKernel([str(KERNEL)])
    k.wait_ready()
    k.send(k.shell, "execute_request", {"code": "sleep 30", "silent": False})
    time.sleep(0.2)
    r = k.request(k.control, "shutdown_request", {"restart": restart}, timeout=3)
    assert r["content"] == {"status": "ok", "restart": restart}
    assert k.proc.wait(3) == 0
    k.close()


def test_stop_on_error_aborts_queued(k):
    ids = [k.send(k.shell, "execute_request", {"code": c, "silent": False, "stop_on_error": True})
           for c in ("sleep 0.3\nundefined_name", "1", "2")]
    replies = {}
    deadline = time.time() + 10
    while len(replies) < 3 and time.time() < deadline:
        r = k.recv(k.shell, timeout=deadline - time.time())
        replies[r["parent_header"]["msg_id"]] = r["content"]["status"]
    assert [replies[i] for i in ids] == ["error", "aborted", "aborted"]
    reply, _ = k.execute("3")
    assert reply["content"]["status"] == "ok"


def test_stop_on_error_false_runs_queued(k):
    ids = [k.send(k.shell, "execute_request", {"code": c, "silent": False, "stop_on_error": False})
           for c in ("sleep 0.2\nundefined_name", "1")]
    replies = {}
    for _ in range(2):
        r = k.recv(k.shell, timeout=10)
        replies[r["parent_header"]["msg_id"]] = r["content"]["status"]
    assert [replies[i] for i in ids] == ["error", "ok"]


def test_busy_idle_and_outputs_before_idle(k):
    reply, out = k.execute('print "a"\nprint "b"\n1 + 1')
    kinds = [m["msg_type"] for m in out]
    assert kinds[0] == "status" and out[0]["content"]["execution_state"] == "busy"
    assert kinds[-1] == "status" and out[-1]["content"]["execution_state"] == "idle"
    assert kinds[1] == "execute_input"
    text = "".join(m["content"]["text"] for m in out if m["msg_type"] == "stream")
    assert text == "a\nb\n"
    assert kinds.index("execute_result") < len(kinds) - 1


def test_stream_is_coalesced(k):
    reply, out = k.execute('repeat 2000 { print "line" }')
    streams = [m for m in out if m["msg_type"] == "stream"]
    assert "".join(m["content"]["text"] for m in streams) == "line\n" * 2000
    assert len(streams) <= 20


def test_silent_execution(k):
    r1, _ = k.execute("1")
    reply, out = k.execute('print "hidden"\n5', silent=True)
    assert [m["msg_type"] for m in out] == ["status", "status"]
    r2, _ = k.execute("2")
    assert r2["content"]["execution_count"] == r1["content"]["execution_count"] + 1


def test_user_expressions(k):
    k.execute("z = 6")
    reply, _ = k.execute("1", user_expressions={"a": "z * 7", "b": "nope_undefined"})
    ue = reply["content"]["user_expressions"]
    assert ue["a"]["status"] == "ok" and ue["a"]["data"]["text/plain"] == "42"
    assert ue["b"]["status"] == "error" and ue["b"]["ename"] == "NameError"


def test_input_request_roundtrip(k):
    msg_id = k.send(k.shell, "execute_request", {"code": 'name = input "your name: "\nprint "hi " + name',
                                                 "silent": False, "allow_stdin": True})
    req = k.recv(k.stdin, timeout=5)
    assert req["msg_type"] == "input_request"
    assert req["content"]["prompt"] == "your name: "
    assert req["parent_header"]["msg_id"] == msg_id
    k.send(k.stdin, "input_reply", {"value": "ada"})
    reply = k.recv(k.shell, timeout=5)
    assert reply["content"]["status"] == "ok"
    text = "".join(m["content"]["text"] for m in k.iopub_until_idle(msg_id) if m["msg_type"] == "stream")
    assert text == "hi ada\n"


def test_input_without_stdin_is_an_error(k):
    reply, out = k.execute('input "x? "', allow_stdin=False)
    assert reply["content"]["status"] == "error"
    assert "allow_stdin" in reply["content"]["evalue"]
    assert alive(k)


def test_comms(k):
    r = k.request(k.shell, "comm_info_request", {})
    assert r["content"] == {"status": "ok", "comms": {}}
    msg_id = k.send(k.shell, "comm_open", {"comm_id": "c1", "target_name": "jupyter.widget", "data": {}})
    out = k.iopub_until_idle(msg_id)
    closes = [m for m in out if m["msg_type"] == "comm_close"]
    assert closes and closes[0]["content"]["comm_id"] == "c1"


def test_iopub_welcome():
    k = RawKernel([str(KERNEL)])
    try:
        m = k.recv(k.iopub, timeout=10)
        while m and m["msg_type"] != "iopub_welcome":
            m = k.recv(k.iopub, timeout=5)
        assert m and m["content"] == {"subscription": ""}
        assert m["parent_header"] == {}
    finally:
        k.close()


def test_kernel_info_fields(k):
    c = k.request(k.shell, "kernel_info_request", {})["content"]
    assert c["protocol_version"] == "5.5"
    assert c["implementation"] == "loupe"
    li = c["language_info"]
    assert li["name"] == "loupe" and li["file_extension"] == ".loupe"
    r = k.request(k.control, "kernel_info_request", {})
    assert r["content"]["implementation"] == "loupe"


def test_refuses_bad_connection_files(tmp_path):
    import subprocess
    bad = tmp_path / "k.json"
    bad.write_text(json.dumps({"signature_scheme": "hmac-md5", "shell_port": 1, "iopub_port": 2,
                               "stdin_port": 3, "control_port": 4, "hb_port": 5}))
    p = subprocess.run([str(KERNEL), "-f", str(bad)], capture_output=True, text=True, timeout=10)
    assert p.returncode != 0 and "unknown signature_scheme" in p.stderr
    p = subprocess.run([str(KERNEL), "-f", str(tmp_path / "missing.json")], capture_output=True, text=True, timeout=10)
    assert p.returncode != 0 and "cannot read connection file" in p.stderr


def test_execute_waits_for_a_late_iopub_subscriber():
    """An execute_request that arrives before the client's IOPub subscription (jupyter
    console with piped input sends its first cell right after kernel_info): the kernel waits
    for the subscriber (up to 2 s) before it publishes, so the cell's output and idle status
    reach the client instead of nobody."""
    k = RawKernel([str(KERNEL)])
    try:
        k.iopub.close(0)   # no subscriber yet
        info = None
        deadline = time.time() + 10
        while info is None and time.time() < deadline:
            info = k.request(k.shell, "kernel_info_request", {}, timeout=0.5)
        assert info is not None
        msg_id = k.send(k.shell, "execute_request", dict(
            code='print "late" 6 * 7', silent=False, store_history=True, user_expressions={},
            allow_stdin=False, stop_on_error=True))
        time.sleep(0.3)   # the subscription comes after the request
        k.iopub = k.ctx.socket(zmq.SUB)
        k.iopub.setsockopt(zmq.SUBSCRIBE, b"")
        k.iopub.connect(k.addr("iopub_port"))
        msgs = k.iopub_until_idle(msg_id, timeout=5)
        kinds = [m["msg_type"] for m in msgs]
        assert kinds[0] == "status" and msgs[0]["content"]["execution_state"] == "busy", kinds
        text = "".join(m["content"].get("text", "") for m in msgs if m["msg_type"] == "stream")
        assert "late 42" in text, kinds
    finally:
        k.close()
