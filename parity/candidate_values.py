"""What a candidate hands over for a tap, made comparable or refused with the reason (junk: ``bad_output``).

A port's value may be anything: a tensor on the 'meta' device, a sparse tensor, one that requires grad, an
object whose ``__array__`` raises, a shape far larger than the reference's. Each is the adapter's fault,
said in words, never a crash of the harness or a copy of gigabytes that cannot be right.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .engines import is_tensor
from .guard import describe_exception
from .shown_text import shown


def readable_value(value: Any, reference: Any, expected_shape: tuple) -> tuple[Any, str | None]:
    """(the value to compare, None), or (None, why it cannot be compared). ``reference``: this chunk's
    reference values (None when not known), against which an absurd size is refused before any copy."""
    if value is None or not hasattr(value, "shape"):
        if not isinstance(value, (int, float, complex, np.number)):
            return None, f"returned {type(value).__name__}, expected an array of shape {expected_shape}"
    if getattr(getattr(value, "device", None), "type", None) == "meta":  # a Torch tensor with a shape, no data
        return None, "returned a tensor on the 'meta' device (a shape without values)"
    layout = str(getattr(value, "layout", "torch.strided"))
    if layout != "torch.strided":  # sparse (COO, CSR, ...): no dense view to compare
        return None, f"returned a {layout} tensor, expected a dense one (call .to_dense())"
    if getattr(value, "requires_grad", False):  # a port run without torch.no_grad(): the values are what count
        value = value.detach()
    if not isinstance(value, np.ndarray) and not is_tensor(value):
        try:  # read once, here: a value whose conversion raises is the adapter's junk, not a harness crash
            value = np.asarray(value)
        except Exception as error:  # noqa: BLE001 - whatever adapter code's __array__ raises
            return None, (f"returned a {shown(type(value).__name__, 200)} that cannot be read as an array "
                          f"({describe_exception(error)})")
    size = int(np.prod(np.shape(value), dtype=np.float64)) if hasattr(value, "shape") else 1
    if reference is not None and size > 4 * np.size(reference) + 4096:  # never copy what cannot be right
        return None, (f"returned shape {tuple(np.shape(value))} ({size:.3g} elements), expected "
                      f"{tuple(np.shape(reference))}: far too large to compare")
    return value, None
