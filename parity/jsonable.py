"""Anything (an adapter's describe(), numpy scalars, NaN) turned into strict JSON values.

A report must always be writable: whatever adapter code put into it, numbers become plain
numbers, non-finite floats become the strings "nan", "inf", "-inf", and objects JSON cannot
hold become their ``repr``. Nothing raises.
"""

from __future__ import annotations

import math
from typing import Any

_MAX_DEPTH = 32


def to_jsonable(value: Any, depth: int = 0) -> Any:
    if depth > _MAX_DEPTH:
        return "<nested too deep>"
    if value is None or isinstance(value, (bool, str)):
        return value
    if hasattr(value, "dtype") and getattr(value, "shape", None) == () and hasattr(value, "item"):
        try:
            value = value.item()  # numpy scalar or 0-d array
        except Exception:  # noqa: BLE001 - an object whose item() is broken is shown, not trusted
            return _text(value)
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else ("nan" if math.isnan(value) else ("inf" if value > 0 else "-inf"))
    if isinstance(value, complex):
        return [to_jsonable(value.real, depth + 1), to_jsonable(value.imag, depth + 1)]
    if isinstance(value, dict):
        return {str(key): to_jsonable(item, depth + 1) for key, item in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [to_jsonable(item, depth + 1) for item in value]
    if hasattr(value, "tolist") and getattr(value, "size", 1e9) <= 64:
        try:
            return to_jsonable(value.tolist(), depth + 1)
        except Exception:  # noqa: BLE001
            return _text(value)
    if hasattr(value, "to_dict"):
        try:
            return to_jsonable(value.to_dict(), depth + 1)
        except Exception:  # noqa: BLE001
            return _text(value)
    return _text(value)


def _text(value: Any) -> str:
    try:
        text = repr(value)
    except Exception:  # noqa: BLE001
        text = f"<{type(value).__name__}>"
    return text if len(text) <= 500 else text[:497] + "..."
