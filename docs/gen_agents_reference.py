"""Write docs/guides/agents-file-reference.md from the code.

    .venv/bin/python docs/gen_agents_reference.py            # write it
    .venv/bin/python docs/gen_agents_reference.py --check    # exit 1 if it is out of date

``tests/docs/test_agents_reference.py`` fails when the checked-in file is out of date.
"""

from __future__ import annotations

import sys
from pathlib import Path

from converge.cli.agents_reference import render

TARGET = Path(__file__).parent / "guides" / "agents-file-reference.md"


def main(argv: list[str]) -> int:
    text = render()
    if "--check" in argv:
        current = TARGET.read_text(encoding="utf-8") if TARGET.exists() else ""
        if current != text:
            fix = ".venv/bin/python docs/gen_agents_reference.py"
            sys.stderr.write(f"{TARGET} is out of date: run {fix}\n")
            return 1
        sys.stdout.write(f"{TARGET} is up to date\n")
        return 0
    TARGET.write_text(text, encoding="utf-8")
    sys.stdout.write(f"wrote {TARGET}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
