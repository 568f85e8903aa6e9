"""``MISSING``: one falsy marker, equal only to itself, that survives a copy and a pickle; and
importing it imports nothing else of core, so reading a graph file stays cheap."""

from __future__ import annotations

import copy
import pickle
import subprocess
import sys

from converge.core import MISSING, Missing


def test_missing_is_one_falsy_object() -> None:
    assert Missing() is MISSING
    assert not MISSING
    assert MISSING != None  # noqa: E711 - told apart from None
    assert repr(MISSING) == "MISSING"
    assert copy.deepcopy(MISSING) is MISSING
    assert pickle.loads(pickle.dumps(MISSING)) is MISSING


def test_importing_missing_imports_no_other_core_module() -> None:
    code = (
        "import sys, converge.core.missing\n"
        "print(sorted(m for m in sys.modules if m.startswith('converge.core')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "['converge.core', 'converge.core.missing']"
