"""bench/kernel: start-up and empty-cell round trip, loupe against ipykernel, same client.

Start-up: spawn the process, send kernel_info_request at once (ZeroMQ queues it until the
kernel binds; the client retries its connection every 1 ms), stop the clock at the reply.
Round trip: send an execute_request with empty code, stop the clock when both the
execute_reply and the idle status have arrived (what nbclient waits for).
Both kernels are measured in the same run with the same raw ZeroMQ client, alternating
runs so that machine noise hits both alike. Prints medians and ratios.

    python3 bench/kernel/bench_kernel.py [--startup-runs 300] [--rt-runs 1000]
"""
import argparse
import os
import pathlib
import statistics
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "protocol"))
from client import RawKernel  # noqa: E402

KERNELS = {
    "loupe": [str(pathlib.Path(os.environ.get("LOUPE_BUILD", ROOT / "build")) / "kernel" / "loupe-kernel")],
    "ipykernel": [sys.executable, "-m", "ipykernel_launcher"],
}


def startup(argv):
    k = RawKernel(argv)
    t0 = k.t_spawn
    msg_id = k.send(k.shell, "kernel_info_request", {})
    r = k.recv(k.shell, timeout=30)
    dt = time.perf_counter() - t0
    assert r and r["parent_header"]["msg_id"] == msg_id
    k.close()
    return dt


def round_trips(argv, n):
    k = RawKernel(argv)
    k.wait_ready()
    k.execute("")            # warm up
    times = []
    content = dict(code="", silent=False, store_history=False, user_expressions={}, allow_stdin=False)
    for _ in range(n):
        t0 = time.perf_counter()
        msg_id = k.send(k.shell, "execute_request", content)
        got_reply = got_idle = False
        while not (got_reply and got_idle):
            if not got_reply and k.shell.poll(0):
                r = k.recv(k.shell)
                got_reply = r["parent_header"].get("msg_id") == msg_id
                continue
            m = k.recv(k.iopub, timeout=10)
            if (m["parent_header"].get("msg_id") == msg_id and m["msg_type"] == "status"
                    and m["content"]["execution_state"] == "idle"):
                got_idle = True
                while not got_reply:
                    r = k.recv(k.shell, timeout=10)
                    got_reply = r["parent_header"].get("msg_id") == msg_id
        times.append(time.perf_counter() - t0)
    k.close()
    return times


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--startup-runs", type=int, default=300)
    ap.add_argument("--rt-runs", type=int, default=1000)
    a = ap.parse_args()
    start = {name: [] for name in KERNELS}
    for _ in range(a.startup_runs):
        for name, argv in KERNELS.items():
            start[name].append(startup(argv))
    rt = {name: round_trips(argv, a.rt_runs) for name, argv in KERNELS.items()}
    med = lambda xs: statistics.median(xs)  # noqa: E731
    print(f"machine: {os.cpu_count()} cores; startup runs {a.startup_runs}, round trips {a.rt_runs}")
    print(f"{'':10} {'startup (median)':>18} {'round trip (median)':>21}")
    for name in KERNELS:
        print(f"{name:10} {med(start[name]) * 1e3:15.2f} ms {med(rt[name]) * 1e6:18.1f} µs")
    print(f"ratio loupe/ipykernel: startup {med(start['loupe']) / med(start['ipykernel']):.4f}, "
          f"round trip {med(rt['loupe']) / med(rt['ipykernel']):.4f}")
    print(f"targets: startup <= 20 ms: {'met' if med(start['loupe']) <= 0.020 else 'NOT met'}; "
          f"round trip <= 200 µs: {'met' if med(rt['loupe']) <= 200e-6 else 'NOT met'}")


if __name__ == "__main__":
    main()
