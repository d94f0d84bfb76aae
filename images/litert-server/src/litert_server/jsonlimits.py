"""Bounded JSON: nesting depth and element count are checked before the text is parsed.

``json.loads`` builds a Python object per value (a float costs 24 bytes plus 8 for its list
slot, about 16 times the two bytes of ``0,``), so the memory a JSON body costs follows its
element count, not its size. The count is an upper bound taken at C speed before parsing:
every value of a JSON document is the first of the document or of an array/object, or follows
a comma, so ``values <= commas + '[' + '{' + 1`` (commas inside strings only make the bound
larger). The depth is scanned (strings skipped) only when the text opens more containers than
the depth limit allows, which small documents never do.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

DEFAULT_MAX_DEPTH = 32
DEFAULT_MAX_ELEMENTS = 1_000_000

_SCAN_BYTES = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}]')
_SCAN_STR = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}]')


class JSONLimitError(ValueError):
    """The text is not valid JSON, or it is nested deeper or holds more elements than allowed."""


class JSONTooLarge(JSONLimitError):
    """The text holds more elements than allowed."""


@dataclass(frozen=True)
class JSONLimits:
    max_depth: int = DEFAULT_MAX_DEPTH
    max_elements: int = DEFAULT_MAX_ELEMENTS


def element_bound(data: bytes | bytearray | str) -> tuple[int, int]:
    """(upper bound of the number of values, number of '[' and '{')."""
    if isinstance(data, str):
        opens = data.count("[") + data.count("{")
        return data.count(",") + opens + 1, opens
    opens = data.count(b"[") + data.count(b"{")
    return data.count(b",") + opens + 1, opens


def check_depth(data: bytes | bytearray | str, max_depth: int) -> None:
    scan = _SCAN_STR if isinstance(data, str) else _SCAN_BYTES
    depth = 0
    for match in scan.finditer(data):
        first = match.group(0)[:1]
        if first in ("[", "{", b"[", b"{"):
            depth += 1
            if depth > max_depth:
                raise JSONLimitError(f"nested deeper than {max_depth} levels (the limit max_json_depth)")
        elif first in ("]", "}", b"]", b"}"):
            depth -= 1


def loads(data: bytes | bytearray | str, limits: JSONLimits | None = None) -> Any:
    """``json.loads`` with the limits checked first; every failure is a JSONLimitError."""
    limits = limits or JSONLimits()
    elements, opens = element_bound(data)
    if elements > limits.max_elements:
        raise JSONTooLarge(
            f"more than {limits.max_elements} JSON elements (the limit max_json_elements; counted up to {elements}); "
            "send large tensors with the binary tensor extension"
        )
    if opens > limits.max_depth:
        check_depth(data, limits.max_depth)
    try:
        return json.loads(data)
    except (ValueError, UnicodeDecodeError, RecursionError, TypeError) as exc:
        raise JSONLimitError(str(exc)) from exc
