#!/bin/bash
# tests/gpu/bundle.sh [DIR] — the GPU tests and the benchmark's driver prebuilt, with the
# libraries they need, for a lent GPU machine that cannot build loupe: such a machine has the
# CUDA toolkit and torch but not ZeroMQ, jansson or OpenBLAS, and no network to install them
# (docs/cuda.md). Run here, from the repository root; then hand DIR.tar.xz (default
# out/gpu-bundle.tar.xz, git-ignored; DIR packed) to the device tool's `carry` and
# tests/gpu/run.sh unpacks it and uses it instead of building:
#
#   DIR/exe/NAME        the test programs that `ctest -R gpu` runs, test_nn_ops, bench_gpu
#   DIR/bin/NAME        a wrapper for each: library path, LOUPE_CUDA_LIB, then exec exe/NAME
#   DIR/lib/            libloupe_cuda.so (sm_80 and sm_90, PTX for 9.0) and every shared
#                       library the programs need that is neither glibc nor CUDA's own
#                       (libcudart, libcublas: the device machine's, found by the wrappers in
#                       /usr/local/cuda and in torch's nvidia wheels)
#   DIR/gpu_tests.txt   the `gpu` tests (ctest -N -R gpu), one per line: NAME PROGRAM
#   DIR/source.txt      tests/gpu/src_hash.sh of the sources it was built from
#
# The build (build-bundle, Release, OpenBLAS rather than MKL: a tenth of the size) is kept.
set -eu
cd "$(dirname "$0")/../.." || exit 2
DIR=${1:-out/gpu-bundle}
BUILD=${BUNDLE_BUILD:-build-bundle}
export PATH=/usr/local/cuda/bin:$PATH

cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DLOUPE_CUDA=ON -DLOUPE_BLAS=openblas \
    "-DCMAKE_CUDA_ARCHITECTURES=${CUDA_ARCHS:-80;90}" > /dev/null
# the gpu tests and the programs they run (a test's command is its program, WORKING_DIRECTORY
# the repository root: tests/CMakeLists.txt)
tests=$(ctest --test-dir "$BUILD" -N -R _gpu$ | sed -n 's/^ *Test *#[0-9]*: *//p')
[ -n "$tests" ] || { echo "bundle.sh: no gpu tests in $BUILD (was CUDA found?)" >&2; exit 1; }
progs=$(for t in $tests; do echo "${t%_gpu}"; done | sort -u)
cmake --build "$BUILD" -j"$(nproc)" --target $progs test_nn_ops bench_gpu loupe_cuda > /dev/null

rm -rf "$DIR"
mkdir -p "$DIR/exe" "$DIR/bin" "$DIR/lib"
for t in $tests; do echo "$t ${t%_gpu}"; done > "$DIR/gpu_tests.txt"
for p in $progs test_nn_ops; do cp "$BUILD/tests/$p" "$DIR/exe/"; done
cp "$BUILD/bench/bench_gpu" "$DIR/exe/"
cp "$BUILD/lib/libloupe_cuda.so" "$DIR/lib/"
strip "$DIR"/exe/* 2>/dev/null || true

# every shared library they load, by the name they ask for, but glibc's (any machine that
# runs CUDA 13 has one at least as new as the 2.34 they need) and CUDA's
for f in "$DIR"/exe/* "$DIR/lib/libloupe_cuda.so"; do
    ldd "$f" | awk '$2 == "=>" && $3 ~ /^\// {print $1, $3}'
done | sort -u | while read -r name path; do
    case $name in
        libc.so*|libm.so*|libdl.so*|libpthread.so*|librt.so*|ld-linux*|libcuda.so*|libcudart*|libcublas*) ;;
        *) cp -L "$path" "$DIR/lib/$name" ;;
    esac
done

for p in "$DIR"/exe/*; do
    n=$(basename "$p")
    cat > "$DIR/bin/$n" <<EOF
#!/bin/sh
# run exe/$n with the bundle's libraries (tests/gpu/bundle.sh); LOUPE_CUDA_LIBDIRS: where
# the machine keeps libcudart.so.13 and libcublas.so.13 when ld.so does not know it
d=\$(cd "\$(dirname "\$0")/.." && pwd)
LD_LIBRARY_PATH="\$d/lib:\${LOUPE_CUDA_LIBDIRS:-/usr/local/cuda/lib64}\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}"
LOUPE_CUDA_LIB=\${LOUPE_CUDA_LIB:-\$d/lib/libloupe_cuda.so}
export LD_LIBRARY_PATH LOUPE_CUDA_LIB
exec "\$d/exe/$n" "\$@"
EOF
    chmod +x "$DIR/bin/$n"
done
strip --strip-unneeded "$DIR/lib/libloupe_cuda.so"
tests/gpu/src_hash.sh > "$DIR/source.txt"   # run.sh compares it with the tree it runs in
bytes=$(find "$DIR" -type f -printf "%s\n" | awk '{s += $1} END {print s}')
# what to carry: the directory packed with xz (OpenBLAS's kernels for every CPU, 36 MB, make
# the directory itself pass the device tool's 64 MiB; packed it is about a quarter); run.sh
# unpacks it (tar, or python3's tarfile where tar has no xz)
rm -f "$DIR.tar.xz"
XZ_OPT="-6 -T0" tar -C "$(dirname "$DIR")" -cJf "$DIR.tar.xz" "$(basename "$DIR")"
packed=$(stat -c %s "$DIR.tar.xz")
echo "$DIR: $((bytes / 1048576)) MiB, packed $DIR.tar.xz $((packed / 1048576)) MiB (carry this)"
if [ "$packed" -gt $((60 * 1048576)) ]; then   # the limit (64 MiB) with the tree beside it
    echo "bundle.sh: $DIR.tar.xz is over what a device run can carry" >&2
    exit 1
fi
echo "$DIR: $(ls "$DIR/exe" | wc -l) programs, $(ls "$DIR/lib" | wc -l) libraries, sources $(cat "$DIR/source.txt")"
