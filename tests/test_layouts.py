"""Declared layouts: every conversion round-trips and puts each axis where the declaration says."""

from __future__ import annotations

import numpy as np
import pytest

from parity.layouts import AxesLayout, LayoutError, as_layout

B, N, C = 3, 4, 4


def _canonical(shape):
    return np.arange(int(np.prod(shape)), dtype=np.float32).reshape(shape)


@pytest.mark.parametrize("text, canonical_layout, shape, port_shape", [
    ("BCHW", "BHWC", (B, N, N, C), (B, C, N, N)),
    ("(B*C)HW1", "BHWC", (B, N, N, C), (B * C, N, N, 1)),
    ("(B*C)HW", "BHWC", (B, N, N, C), (B * C, N, N)),
    ("BC12", "B12C", (B, 1, 2, C), (B, C, 1, 2)),
    ("(B*C)112", "B12C", (B, 1, 2, C), (B * C, 1, 1, 2)),
    ("111HW", "HW", (N, N), (1, 1, 1, N, N)),
    ("HW1", "HW", (N, N), (N, N, 1)),
    ("2M", "M2", (5, 2), (2, 5)),
    ("B", "B", (B,), (B,)),
    ("", "scalar", (), ()),
])
def test_round_trip_and_shape(text, canonical_layout, shape, port_shape):
    layout = AxesLayout(text)
    value = _canonical(shape)
    free = tuple(None if i == 0 and canonical_layout != "HW" else dim for i, dim in enumerate(shape))
    port = layout.to_port(value, canonical_layout, free)
    assert port.shape == port_shape
    back = layout.to_canonical(port, canonical_layout, free)
    assert back.shape == shape and np.array_equal(back, value)


def test_axes_land_where_declared():
    value = _canonical((B, N, N, C))
    first = AxesLayout("BCHW").to_port(value, "BHWC", (None, N, N, C))
    assert np.array_equal(first[1, 2], value[1, :, :, 2])
    flat = AxesLayout("(B*C)HW1").to_port(value, "BHWC", (None, N, N, C))
    assert np.array_equal(flat[1 * C + 2, :, :, 0], value[1, :, :, 2])  # sample-major, channel-minor
    offsets = _canonical((B, 1, 2, C))
    port = AxesLayout("BC12").to_port(offsets, "B12C", (None, 1, 2, C))
    assert port[2, 3, 0, 0] == offsets[2, 0, 0, 3] and port[2, 3, 0, 1] == offsets[2, 0, 1, 3]  # x, then y


def test_torch_tensors_convert_as_views_on_their_device():
    torch = pytest.importorskip("torch")
    value = torch.arange(B * C * N * N, dtype=torch.float32).reshape(B, C, N, N)
    canonical = AxesLayout("BCHW").to_canonical(value, "BHWC", (None, N, N, C))
    assert isinstance(canonical, torch.Tensor) and canonical.shape == (B, N, N, C)
    assert canonical.data_ptr() == value.data_ptr()  # a view, no copy
    assert canonical[1, 2, 3, 0] == value[1, 0, 2, 3]


@pytest.mark.parametrize("text, message", [
    ("BHWX", "cannot read"),
    ("BHW", "does not hold the axes"),
    ("BBHW", "appears twice"),
    ("(B*C", "cannot read"),
])
def test_bad_declarations_say_what_is_wrong(text, message):
    with pytest.raises(LayoutError, match=message):
        AxesLayout(text).to_port(_canonical((B, N, N, C)), "BHWC", (None, N, N, C))


def test_a_tensor_that_does_not_fit_its_declaration_is_refused():
    with pytest.raises(LayoutError, match="should have 12 elements"):  # a merged axis cannot be split otherwise
        AxesLayout("(B*C)HW").to_canonical(np.zeros((B * 3, N, N)), "BHWC", (B, N, N, C))
    with pytest.raises(LayoutError, match="has 3 axes"):
        AxesLayout("BCHW").to_canonical(np.zeros((B, N, N)), "BHWC", (None, N, N, C))


def test_an_axis_of_another_size_is_converted_so_the_comparison_reports_the_shape():
    value = np.arange(B * 3 * (N + 2) * N).reshape(B, 3, N + 2, N)
    canonical = AxesLayout("BCHW").to_canonical(value, "BHWC", (None, N, N, C))
    assert canonical.shape == (B, N + 2, N, 3) and np.array_equal(canonical, value.transpose(0, 2, 3, 1))


def test_as_layout_accepts_strings_layouts_and_none():
    assert as_layout(None) is None
    assert as_layout("BCHW").describe() == "BCHW"
    with pytest.raises(LayoutError):
        as_layout(3)
