"""The benchmarks' C drivers (bench/*/bench_*.c) are CMake targets of the build they measure;
native(build, name) builds one there if needed and returns its path."""
import os
import subprocess
import sys


def native(build, name):
    build = os.path.abspath(build)
    if not os.path.exists(os.path.join(build, "CMakeCache.txt")):
        sys.exit(f"{build} is not a cmake build directory: cmake -S . -B {build} -DCMAKE_BUILD_TYPE=Release")
    subprocess.run(["cmake", "--build", build, "--target", name], check=True, stdout=subprocess.DEVNULL)
    return os.path.join(build, "bench", name)
