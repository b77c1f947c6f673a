"""Write docs/commands.md: the help of every built-in command, as `help NAME` shows it.

The registry (runtime/commands/list.h) is the single source; this page is generated from it
by the built `loupe` command, and tests/docs/test_command_docs.py fails when it is stale.

    python3 tools/make_command_docs.py [--check]
"""
import os
import pathlib
import re
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
LOUPE = pathlib.Path(os.environ.get("LOUPE_BUILD", ROOT / "build")) / "cli" / "loupe"
OUT = ROOT / "docs" / "commands.md"


def commands():
    text = (ROOT / "runtime" / "commands" / "list.h").read_text()
    return re.findall(r"^LP_CMD\((\w+)\)", text, re.M)


def render():
    names = commands()
    script = "".join(f'print "<<{n}>>"\nhelp {n}\n' for n in names)
    p = subprocess.run([str(LOUPE), "run", "-"], input=script, capture_output=True, text=True)
    if p.returncode != 0:   # older builds: no "-" for stdin
        tmp = ROOT / "build" / "command_docs.loupe"
        tmp.write_text(script)
        p = subprocess.run([str(LOUPE), "run", str(tmp)], capture_output=True, text=True, check=True)
    parts = re.split(r"^<<(\w+)>>\n", p.stdout, flags=re.M)[1:]
    helps = dict(zip(parts[0::2], parts[1::2]))
    out = ["# Commands", "",
           "Generated from the command registry by `tools/make_command_docs.py`; `help NAME` in a cell",
           "shows the same text. The language itself (statements, values, errors) is in",
           "[language.md](language.md).", ""]
    out += ["| command | |", "|---|---|"]
    for n in names:
        first = helps[n].strip().splitlines()
        summary = first[2] if len(first) > 2 else ""
        out.append(f"| [`{n}`](#{n}) | {summary} |")
    out.append("")
    for n in names:
        out += [f"## {n}", "", "```", helps[n].rstrip("\n"), "```", ""]
    return "\n".join(out)


if __name__ == "__main__":
    text = render()
    if "--check" in sys.argv:
        sys.exit(0 if OUT.read_text() == text else "docs/commands.md is stale: run tools/make_command_docs.py")
    OUT.write_text(text)
    print(f"wrote {OUT}")
