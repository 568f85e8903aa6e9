"""Write docs/guides/yaml-reference.md from the code (``--check``: exit 1 if it is out of date).

    .venv/bin/python docs/gen_yaml_reference.py [--check]
"""

from __future__ import annotations

import sys
from pathlib import Path

from converge.orchestration.yaml_reference import render

TARGET = Path(__file__).parent / "guides" / "yaml-reference.md"


def main(argv: list[str]) -> int:
    text = render()
    if "--check" in argv:
        current = TARGET.read_text(encoding="utf-8") if TARGET.exists() else ""
        if current != text:
            print(f"{TARGET} is out of date: run python docs/gen_yaml_reference.py", file=sys.stderr)
            return 1
        print(f"{TARGET} is up to date")
        return 0
    TARGET.write_text(text, encoding="utf-8")
    print(f"wrote {TARGET}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
