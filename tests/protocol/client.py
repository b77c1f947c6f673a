"""A raw ZeroMQ client for the tests that must send what a well-behaved client never
sends (bad signatures, truncated frames, invalid JSON) and for timing the kernel."""
import hashlib
import hmac
import json
import os
import subprocess
import tempfile
import time
import uuid

import zmq

DELIM = b"<IDS|MSG>"


def free_ports(n):
    import socket
    socks, ports = [], []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
        ports.append(s.getsockname()[1])
    for s in socks:
        s.close()
    return ports


class RawKernel:
    """Starts `argv + [-f conn]` and talks to it over plain ZeroMQ sockets."""

    def __init__(self, argv, key=None, cwd=None):
        self.key = (key if key is not None else str(uuid.uuid4())).encode()
        ports = free_ports(5)
        self.conn = dict(transport="tcp", ip="127.0.0.1", shell_port=ports[0], iopub_port=ports[1],
                         stdin_port=ports[2], control_port=ports[3], hb_port=ports[4],
                         signature_scheme="hmac-sha256", key=self.key.decode(), kernel_name="loupe")
        fd, self.conn_file = tempfile.mkstemp(suffix=".json", prefix="kernel-")
        with os.fdopen(fd, "w") as f:
            json.dump(self.conn, f)
        self.ctx = zmq.Context()
        self.session = str(uuid.uuid4())
        self.t_spawn = time.perf_counter()
        # stderr to a file, not a pipe: a pipe nobody reads would block a chatty kernel
        self.stderr = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(list(argv) + ["-f", self.conn_file], cwd=cwd,
                                     stdout=subprocess.DEVNULL, stderr=self.stderr)
        # shell and stdin share a routing id, so input_request finds the client that asked
        self.shell = self.socket(zmq.DEALER, "shell_port", self.session.encode())
        self.control = self.socket(zmq.DEALER, "control_port")
        self.stdin = self.socket(zmq.DEALER, "stdin_port", self.session.encode())
        self.iopub = self.ctx.socket(zmq.SUB)
        self.iopub.setsockopt(zmq.SUBSCRIBE, b"")
        self.iopub.setsockopt(zmq.RECONNECT_IVL, 1)
        self.iopub.connect(self.addr("iopub_port"))

    def addr(self, name):
        return "tcp://127.0.0.1:%d" % self.conn[name]

    def socket(self, kind, name, identity=None):
        s = self.ctx.socket(kind)
        if identity:
            s.setsockopt(zmq.IDENTITY, identity)
        s.setsockopt(zmq.LINGER, 0)
        s.setsockopt(zmq.RECONNECT_IVL, 1)   # the kernel may not have bound yet: retry fast
        s.connect(self.addr(name))
        return s

    def sign(self, parts):
        if not self.key:
            return b""
        h = hmac.new(self.key, digestmod=hashlib.sha256)
        for p in parts:
            h.update(p)
        return h.hexdigest().encode()

    def frames(self, msg_type, content, sign=True, header_extra=None):
        header = dict(msg_id=str(uuid.uuid4()), session=self.session, username="test",
                      date="2026-01-01T00:00:00.000000Z", msg_type=msg_type, version="5.3")
        header.update(header_extra or {})
        parts = [json.dumps(header).encode(), b"{}", b"{}", json.dumps(content).encode()]
        return header["msg_id"], [DELIM, self.sign(parts) if sign else b"0" * 64] + parts

    def send(self, sock, msg_type, content, **kw):
        msg_id, frames = self.frames(msg_type, content, **kw)
        sock.send_multipart(frames)
        return msg_id

    def recv(self, sock, timeout=5.0):
        if not sock.poll(int(timeout * 1000)):
            return None
        frames = sock.recv_multipart()
        i = frames.index(DELIM)
        sig, parts = frames[i + 1], frames[i + 2:i + 6]
        assert sig == self.sign(parts), "kernel sent a bad signature"
        header, parent, meta, content = (json.loads(p) for p in parts)
        return dict(header=header, parent_header=parent, metadata=meta, content=content,
                    msg_type=header["msg_type"], buffers=frames[i + 6:])

    def request(self, sock, msg_type, content, timeout=5.0):
        msg_id = self.send(sock, msg_type, content)
        deadline = time.time() + timeout
        while time.time() < deadline:
            r = self.recv(sock, deadline - time.time())
            if r and r["parent_header"].get("msg_id") == msg_id:
                return r
        return None

    def iopub_until_idle(self, msg_id, timeout=10.0):
        """IOPub messages of request msg_id up to and including its idle status."""
        out, deadline = [], time.time() + timeout
        while time.time() < deadline:
            m = self.recv(self.iopub, deadline - time.time())
            if m is None:
                break
            if m["parent_header"].get("msg_id") != msg_id:
                continue
            out.append(m)
            if m["msg_type"] == "status" and m["content"]["execution_state"] == "idle":
                return out
        raise AssertionError("no idle for %s; got %r" % (msg_id, [m["msg_type"] for m in out]))

    def execute(self, code, timeout=10.0, **extra):
        content = dict(code=code, silent=False, store_history=True, user_expressions={},
                       allow_stdin=False, stop_on_error=True)
        content.update(extra)
        msg_id = self.send(self.shell, "execute_request", content)
        reply = None
        deadline = time.time() + timeout
        while time.time() < deadline:
            r = self.recv(self.shell, deadline - time.time())
            if r and r["parent_header"].get("msg_id") == msg_id:
                reply = r
                break
        return reply, self.iopub_until_idle(msg_id, max(0.1, deadline - time.time()))

    def wait_ready(self, timeout=10.0):
        """kernel_info until answered (the kernel may still be binding), then the
        iopub_welcome that proves our subscription is in place (no output is lost)."""
        deadline = time.time() + timeout
        info = None
        while info is None and time.time() < deadline:
            info = self.request(self.shell, "kernel_info_request", {}, timeout=0.5)
        if info is None:
            raise AssertionError("kernel did not answer kernel_info")
        while time.time() < deadline:
            m = self.recv(self.iopub, deadline - time.time())
            if m and m["msg_type"] == "iopub_welcome":
                return info
        raise AssertionError("no iopub_welcome")

    def close(self):
        if self.proc.poll() is None:
            self.request(self.control, "shutdown_request", {"restart": False}, timeout=2)
            try:
                self.proc.wait(3)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for s in (self.shell, self.control, self.stdin, self.iopub):
            s.close(0)
        self.ctx.term()
        self.stderr.close()
        os.unlink(self.conn_file)
