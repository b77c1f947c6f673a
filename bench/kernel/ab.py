"""bench/kernel/ab.py: empty-cell round trip of several kernel builds, interleaved.

On a shared machine the noise moves by tens of microseconds from one second to the next,
so separate runs cannot be compared. This runs `kbench roundtrip` for each command in turn,
ROUNDS times with RUNS round trips each (a fresh kernel every time), and prints each
command's median over all its round trips, the median of its per-round medians, and the
ratio to the first command.

    python3 bench/kernel/ab.py [--rounds 10] [--runs 300] NAME=COMMAND ...
    e.g. old=/tmp/old/loupe-kernel new=build-kern/kernel/loupe-kernel \
         ipykernel="python3 -m ipykernel_launcher"
"""
import argparse
import os
import pathlib
import shlex
import statistics
import subprocess

ROOT = pathlib.Path(__file__).resolve().parents[2]
BUILD = pathlib.Path(os.environ.get("LOUPE_BUILD", ROOT / "build"))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--runs", type=int, default=300)
    ap.add_argument("--kbench", default=str(BUILD / "bench" / "kbench"))
    ap.add_argument("kernels", nargs="+", help="NAME=COMMAND")
    a = ap.parse_args()
    kernels = [k.split("=", 1) for k in a.kernels]
    times = {name: [] for name, _ in kernels}
    rounds = {name: [] for name, _ in kernels}
    for _ in range(a.rounds):
        for name, cmd in kernels:
            out = subprocess.run([a.kbench, "roundtrip", str(a.runs), "--"] + shlex.split(cmd),
                                 capture_output=True, text=True, check=True, timeout=600).stdout
            t = [float(x) for x in out.split()]
            times[name] += t
            rounds[name].append(statistics.median(t))
    print(f"machine: {os.cpu_count()} cores; load average {os.getloadavg()[0]:.2f}; "
          f"{a.rounds} rounds x {a.runs} round trips each, interleaved")
    base = statistics.median(times[kernels[0][0]])
    print(f"{'':12} {'median':>9} {'p10':>8} {'p90':>8} {'median of rounds':>17} {'ratio':>7}")
    for name, _ in kernels:
        t = sorted(times[name])
        med = statistics.median(t)
        print(f"{name:12} {med:7.1f}µs {t[len(t) // 10]:6.1f}µs {t[len(t) * 9 // 10]:6.1f}µs "
              f"{statistics.median(rounds[name]):15.1f}µs {med / base:7.3f}")


if __name__ == "__main__":
    main()
