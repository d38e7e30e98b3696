"""Declared tensor layouts: how a port holds a named tensor, converted to and from the canonical one.

A layout is written as the port's axes, in order, with the registry's axis letters:

* ``B`` samples, ``H`` rows, ``W`` columns, ``C`` channels, ``M`` scan positions;
* ``2`` the (x, y) coordinate axis of offsets and scan positions;
* ``1`` an axis of length one (added or dropped);
* ``(B*C)`` axes merged into one, outer first (``(B*C)HW1``: one flat patch per sample and channel).

So ``"BCHW"`` is channels first, ``"(B*C)HW1"`` is PtychoPINN's flat patches, ``"BC12"`` offsets as
(B, C, 1, 2) and ``"111HW"`` a probe with three leading singleton axes. Canonical layouts are those
of the registry (``BHWC``, ``B12C``, ``HW``, ``M2``, ``B``, ``scalar``). Conversions are
transposes and reshapes, on numpy arrays or torch tensors alike (a torch result stays on its device,
as a view where it can). A port whose tensors need more (a real/imaginary pair for a complex
tensor, (y, x) offsets) passes a ``Layout`` subclass with its own two methods instead of a string.
"""

from __future__ import annotations

import math
import re
from typing import Any

CANONICAL_AXES = {"BHWC": "BHWC", "B12C": "B12C", "HW": "HW", "M2": "M2", "B": "B", "scalar": ""}
_TOKEN = re.compile(r"\(([BHWCM12](?:\*[BHWCM12])*)\)|([BHWCM12])")


class LayoutError(ValueError):
    """A layout string that cannot describe the tensor it is declared for."""


class Layout:
    """Converts one named tensor between the canonical layout and the port's.

    ``shape`` is the canonical shape (``None`` for a dimension the registry leaves free).
    """

    def to_port(self, value: Any, canonical_layout: str, shape: tuple[int | None, ...]) -> Any:
        return value

    def to_canonical(self, value: Any, canonical_layout: str, shape: tuple[int | None, ...]) -> Any:
        return value

    def describe(self) -> str:
        return type(self).__name__


def _parse(text: str) -> list[tuple[str, ...]]:
    """'(B*C)HW1' -> [('B', 'C'), ('H',), ('W',), ('1',)]."""
    compact = text.replace(" ", "").replace(",", "")
    groups: list[tuple[str, ...]] = []
    position = 0
    while position < len(compact):
        match = _TOKEN.match(compact, position)
        if match is None:
            raise LayoutError(f"layout {text!r}: cannot read {compact[position:]!r}; write axes as letters "
                              "B H W C M, 2 for (x, y), 1 for a singleton, (B*C) for merged axes")
        groups.append(tuple(match.group(1).split("*")) if match.group(1) else (match.group(2),))
        position = match.end()
    return groups


def _transpose(value: Any, axes: list[int]) -> Any:
    if axes == sorted(axes):
        return value
    if hasattr(value, "permute"):
        return value.permute(*axes)
    return value.transpose(axes)


class AxesLayout(Layout):
    """A layout given as axis letters (see the module docstring)."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.groups = _parse(text)
        letters = [axis for group in self.groups for axis in group if axis != "1"]
        if len(set(letters)) != len(letters):
            raise LayoutError(f"layout {text!r}: an axis appears twice")
        self.letters = letters

    def describe(self) -> str:
        return self.text

    def _core(self, canonical_layout: str) -> list[str]:
        canonical = [axis for axis in CANONICAL_AXES.get(canonical_layout, canonical_layout) if axis != "1"]
        if sorted(canonical) != sorted(self.letters):
            raise LayoutError(f"layout {self.text!r} does not hold the axes of the canonical layout "
                              f"{canonical_layout!r} ({' '.join(canonical) or 'none'}, plus any 1s)")
        return canonical

    @staticmethod
    def _sizes(canonical: list[str], shape: tuple[int | None, ...], canonical_layout: str) -> dict[str, int | None]:
        axes = [axis for axis in CANONICAL_AXES.get(canonical_layout, canonical_layout)]
        return {axis: size for axis, size in zip(axes, shape) if axis != "1"}

    def to_port(self, value: Any, canonical_layout: str, shape: tuple[int | None, ...]) -> Any:
        canonical = self._core(canonical_layout)
        actual = dict(zip([axis for axis in CANONICAL_AXES.get(canonical_layout, canonical_layout)], value.shape))
        core = value.reshape(tuple(actual[axis] for axis in canonical))
        core = _transpose(core, [canonical.index(axis) for axis in self.letters])
        port_shape = tuple(math.prod(actual[axis] for axis in group if axis != "1") for group in self.groups)
        return core.reshape(port_shape)

    def to_canonical(self, value: Any, canonical_layout: str, shape: tuple[int | None, ...]) -> Any:
        canonical = self._core(canonical_layout)
        sizes = self._sizes(canonical, shape, canonical_layout)
        if len(value.shape) != len(self.groups):
            raise LayoutError(f"a tensor declared {self.text!r} has {len(value.shape)} axes {tuple(value.shape)}, "
                              f"the layout says {len(self.groups)}")
        for group, size in zip(self.groups, value.shape):
            real = [axis for axis in group if axis != "1"]
            unknown = [axis for axis in real if sizes.get(axis) in (None, -1)]
            known = math.prod(sizes[axis] for axis in real if axis not in unknown)
            if len(unknown) == 1 and known and size % known == 0:
                sizes[unknown[0]] = size // known
            elif len(unknown) > 1:
                raise LayoutError(f"layout {self.text!r}: cannot split axis {group} of size {size}")
            elif not unknown and int(size) != known and len(real) == 1:
                # one axis: its size is the tensor's; the comparison then reports the shape that differs (and
                # what would give it, e.g. a buffer or padding of another size) instead of a layout error
                sizes[real[0]] = int(size)
            elif not unknown and int(size) != known:
                raise LayoutError(f"a tensor declared {self.text!r} has shape {tuple(value.shape)}; axis "
                                  f"{'*'.join(group)} should have {known} elements")
        core = value.reshape(tuple(sizes[axis] for axis in self.letters))
        core = _transpose(core, [self.letters.index(axis) for axis in canonical])
        full = [axis for axis in CANONICAL_AXES.get(canonical_layout, canonical_layout)]
        return core.reshape(tuple(1 if axis == "1" else sizes[axis] for axis in full))


def as_layout(declared: str | Layout | None) -> Layout | None:
    if declared is None or isinstance(declared, Layout):
        return declared
    if isinstance(declared, str):
        return AxesLayout(declared)
    raise LayoutError(f"a layout is a string such as 'BCHW' or a parity.Layout, got {declared!r}")
