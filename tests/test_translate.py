"""Translation in both backends: one window gather per image, images shared by consecutive shifts.

The oracle tests (``test_oracle_physics``) check the values against
``scipy.ndimage``; here: the sharing contract (G images serve S shifts, S / G
each, as ``patches_extracted`` uses it), shifts far outside the image, and
TF == Torch bit for bit on the same inputs.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("backends.tf", reason="TensorFlow (the reference) is not installed")
pytest.importorskip("backends.torch", reason="PyTorch (the candidate) is not installed")

import tensorflow as tf  # noqa: E402
import torch  # noqa: E402

from backends.tf import ops as tf_ops  # noqa: E402
from backends.torch import ops as torch_ops  # noqa: E402
from parity.synthetic import generator  # noqa: E402


def _translate(framework: str, images: np.ndarray, shifts: np.ndarray, **kwargs) -> np.ndarray:
    complex_ = images.dtype.kind == "c"
    if framework == "tf":
        function = tf_ops.translate_complex if complex_ else tf_ops.translate
        return function(tf.constant(images), tf.constant(shifts), **kwargs).numpy()
    function = torch_ops.translate_complex if complex_ else torch_ops.translate
    return function(torch.from_numpy(images), torch.from_numpy(shifts), **kwargs).numpy()


def _inputs(groups: int, per_image: int, dtype: str, spread: float = 6.0):
    rng = generator(5)
    images = rng.normal(size=(groups, 20, 23)) + (1j * rng.normal(size=(groups, 20, 23)) if dtype[0] == "c" else 0)
    shifts = rng.uniform(-spread, spread, size=(groups * per_image, 2))
    real = "float32" if dtype in ("float32", "complex64") else "float64"
    return images.astype(dtype), shifts.astype(real)


@pytest.mark.parametrize("framework", ["tf", "torch"])
@pytest.mark.parametrize("dtype", ["float32", "float64", "complex64", "complex128"])
def test_shared_images_equal_explicit_repeats(framework, dtype):
    images, shifts = _inputs(groups=3, per_image=4, dtype=dtype)
    shared = _translate(framework, images, shifts, start=(2, 3), size=(9, 11))
    repeated = _translate(framework, np.repeat(images, 4, axis=0), shifts, start=(2, 3), size=(9, 11))
    assert shared.shape == (12, 9, 11)
    assert shared.tobytes() == repeated.tobytes()
    one = _translate(framework, images[:1], shifts)  # a single image serves every shift
    assert one.tobytes() == _translate(framework, np.repeat(images[:1], 12, axis=0), shifts).tobytes()


@pytest.mark.parametrize("framework", ["tf", "torch"])
def test_uneven_sharing_is_refused(framework):
    images, shifts = _inputs(groups=3, per_image=4, dtype="float64")
    with pytest.raises((ValueError, tf.errors.InvalidArgumentError), match="shared evenly"):
        _translate(framework, images, shifts[:10])


@pytest.mark.parametrize("framework", ["tf", "torch"])
def test_shifts_far_outside_give_zeros_and_integer_shifts_move_exactly(framework):
    images, _ = _inputs(groups=2, per_image=1, dtype="float64")
    far = np.array([[1e4, 3.5], [-2.5, -1e4]])
    assert not _translate(framework, images, far).any()
    moved = _translate(framework, images, np.array([[2.0, -3.0], [-1.0, 1.0]]))
    np.testing.assert_array_equal(moved[0, :-3, 2:], images[0, 3:, :-2])  # content moves by +t
    np.testing.assert_array_equal(moved[1, 1:, :-1], images[1, :-1, 1:])
    assert not moved[0, -3:].any() and not moved[0, :, :2].any()


@pytest.mark.parametrize("dtype", ["float32", "float64", "complex64", "complex128"])
def test_both_backends_agree_bit_for_bit(dtype):
    images, shifts = _inputs(groups=2, per_image=5, dtype=dtype, spread=30.0)
    a = _translate("tf", images, shifts, start=(1, 4), size=(12, 7))
    b = _translate("torch", images, shifts, start=(1, 4), size=(12, 7))
    assert a.dtype == b.dtype and a.tobytes() == b.tobytes()
