"""The docs stay true: the YAML reference is what the code generates, and every kind documents
its options. (Every ``yaml`` block of the guides loads: ``test_code_blocks.py``.)"""

from __future__ import annotations

from pathlib import Path

import pytest

from converge.errors import ValidationError
from converge.orchestration.kinds import KindContext, kind_info, kind_names, read_kind
from converge.orchestration.yaml_reference import render

DOCS = Path(__file__).resolve().parents[2] / "docs"
REFERENCE = DOCS / "guides" / "yaml-reference.md"


def test_the_checked_in_reference_is_up_to_date() -> None:
    assert REFERENCE.read_text(encoding="utf-8") == render(), (
        "docs/guides/yaml-reference.md is out of date: "
        "run .venv/bin/python docs/gen_yaml_reference.py"
    )


def test_the_reference_names_every_kind_and_option() -> None:
    text = render()
    for name in kind_names():
        assert f"### kind: {name}" in text
        for option in kind_info(name).options:
            assert f"`{option}`" in text


@pytest.mark.parametrize("name", kind_names())
def test_a_kinds_declared_options_are_the_ones_it_accepts(name: str) -> None:
    info = kind_info(name)
    assert info.doc, f"kind {name} has no doc"
    assert info.options, f"kind {name} declares no options"
    assert all(doc.strip() for doc in info.options.values())
    ctx = KindContext("a", "<test>", 1, Path.cwd(), {})
    with pytest.raises(ValidationError) as caught:
        read_kind(name, {"kind": name, "no_such_option": 1}, ctx)
    assert f"expected one of {', '.join(info.options)}" in str(caught.value)


def test_register_kind_refuses_an_undeclared_required_option() -> None:
    from converge.orchestration.kinds import register_kind

    with pytest.raises(ValueError, match="not declared"):
        register_kind("docs_test_kind", lambda o, c: None, options={"a": "A."}, required=("b",))
