"""docs/commands.md is what the registry says today (regenerate: tools/make_command_docs.py)."""
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tools"))
import make_command_docs  # noqa: E402


def test_command_docs_are_current():
    assert (ROOT / "docs" / "commands.md").read_text() == make_command_docs.render(), \
        "docs/commands.md is stale: run python3 tools/make_command_docs.py"


def test_every_command_is_documented():
    text = (ROOT / "docs" / "commands.md").read_text()
    for name in make_command_docs.commands():
        assert f"## {name}\n" in text
