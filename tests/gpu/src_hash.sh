#!/bin/sh
# src_hash.sh — one hash of every C, CUDA and CMake source the programs are built from, so
# that tests/gpu/run.sh can tell whether a prebuilt bundle (bundle.sh) matches the tree it
# runs in (which may not be a git checkout). Run from the repository root.
find runtime kernel tests/unit tests/gpu bench CMakeLists.txt -type f \
    \( -name '*.c' -o -name '*.h' -o -name '*.cu' -o -name '*.cuh' -o -name CMakeLists.txt \) \
    -not -path 'tests/gpu/emu/*' | LC_ALL=C sort | xargs cat | sha1sum | cut -c1-16
