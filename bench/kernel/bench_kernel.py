"""bench/kernel: start-up and empty-cell round trip, loupe against ipykernel, same client.

The client is bench/kernel/kbench.c (built as build/bench/kbench), a raw ZeroMQ client in
C, so its own cost is small and identical for both kernels:
  start-up    spawn the process, send kernel_info_request at once (ZeroMQ queues it until
              the kernel binds; the client reconnects every 1 ms), stop at the reply;
  round trip  send an execute_request with empty code, stop when both the execute_reply
              and the idle status have arrived (what nbclient waits for).
Start-ups alternate between the kernels in blocks of 10, so machine noise hits both alike.
Prints medians and the ratios.

    python3 bench/kernel/bench_kernel.py [--startup-runs 300] [--rt-runs 1000]
"""
import argparse
import os
import pathlib
import statistics
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]
BUILD = pathlib.Path(os.environ.get("LOUPE_BUILD", ROOT / "build"))
KBENCH = BUILD / "bench" / "kbench"
KERNELS = {
    "loupe": [str(BUILD / "kernel" / "loupe-kernel")],
    "ipykernel": [sys.executable, "-m", "ipykernel_launcher"],
}


def kbench(mode, n, argv):
    out = subprocess.run([str(KBENCH), mode, str(n), "--"] + argv, capture_output=True, text=True,
                         check=True, timeout=3600).stdout
    return [float(x) for x in out.split()]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--startup-runs", type=int, default=300)
    ap.add_argument("--rt-runs", type=int, default=1000)
    a = ap.parse_args()
    start = {name: [] for name in KERNELS}
    done = 0
    while done < a.startup_runs:
        block = min(10, a.startup_runs - done)
        for name, argv in KERNELS.items():
            start[name] += kbench("startup", block, argv)
        done += block
    rt = {name: kbench("roundtrip", a.rt_runs, argv) for name, argv in KERNELS.items()}
    med = {name: (statistics.median(start[name]) / 1e3, statistics.median(rt[name])) for name in KERNELS}
    print(f"machine: {os.cpu_count()} cores; load average {os.getloadavg()[0]:.2f}; "
          f"start-ups {a.startup_runs} each, round trips {a.rt_runs} each")
    print(f"{'':10} {'start-up (median)':>18} {'round trip (median)':>21}")
    for name in KERNELS:
        print(f"{name:10} {med[name][0]:15.2f} ms {med[name][1]:18.1f} µs")
    s = med["loupe"][0] / med["ipykernel"][0]
    r = med["loupe"][1] / med["ipykernel"][1]
    print(f"ratio loupe/ipykernel: start-up {s:.4f} ({1 / s:.0f}x faster), round trip {r:.4f} ({1 / r:.0f}x faster)")
    print(f"targets: start-up <= 20 ms {'met' if med['loupe'][0] <= 20 else 'NOT met'}; "
          f"round trip <= 200 µs {'met' if med['loupe'][1] <= 200 else 'NOT met'}")


if __name__ == "__main__":
    main()
