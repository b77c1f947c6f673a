"""Programs of the build under test: $LOUPE_BUILD (run-tests.sh sets it), else ./build.
A missing program fails the test: run-tests.sh builds everything first."""
import os

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def built(rel):
    """Path of build/REL (e.g. "tests/test_st", "cli/loupe"); fails when it is missing."""
    path = os.path.join(os.environ.get("LOUPE_BUILD", os.path.join(ROOT, "build")), rel)
    assert os.access(path, os.X_OK), f"{path} is not built (cmake --build BUILD; set LOUPE_BUILD)"
    return path
