"""What a receiver of untrusted bytes may see: converge's errors, and nothing else."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from converge.errors import ConvergeError, ProtocolError, ValidationError


def refused(call: Callable[[], Any]) -> BaseException:
    """Assert ``call()`` raises ProtocolError or ValidationError; return the error."""
    with pytest.raises(ConvergeError) as info:
        call()
    assert isinstance(info.value, (ProtocolError, ValidationError)), repr(info.value)
    return info.value


def converge_errors_only(call: Callable[[], Any]) -> None:
    """Run ``call()``; it may succeed or raise a ConvergeError, nothing else."""
    try:
        call()
    except ConvergeError:
        pass
