"""The numpy engine: ``fused.fused_chunk`` on numpy arrays, with contiguous out= buffers."""

from __future__ import annotations

import numpy as np

from .. import phase_frontier

BLOCK = 4096  # sums: float32 partial sums over blocks this long, accumulated in float64


def _flat(x: np.ndarray) -> np.ndarray:
    x = x.reshape(-1)
    return x.view(x.real.dtype) if np.iscomplexobj(x) else x


class NumpyOps:
    """Array operations of the fast path for numpy (CPU, single-threaded, never affected by thread jitter)."""

    name = "numpy"
    screen = True  # bound-and-evaluate the complex maxima instead of evaluating every element in float64
    squares = False  # |x| is computed with hypot: no overflow or underflow of squares

    @staticmethod
    def prepare_reference(a, work):
        return np.asarray(a, dtype=work, order="C")  # not ascontiguousarray: that makes 0-d arrays 1-d

    @staticmethod
    def prepare_candidate(b, work):
        b = np.asarray(b)
        return b if b.dtype == work else b.astype(work)

    @staticmethod
    def is_complex(x) -> bool:
        return x.dtype.kind == "c"

    @staticmethod
    def eps(x) -> float:
        return float(np.finfo(x.dtype).eps)

    @staticmethod
    def tiny(x) -> float:
        return float(np.sqrt(np.finfo(x.dtype).tiny))

    @staticmethod
    def magnitude(x):
        return np.abs(x, out=np.empty(x.shape, x.real.dtype))  # out=: a 0-d input stays an array

    @staticmethod
    def sub(b, a):
        return np.subtract(b, a, out=np.empty(a.shape, a.dtype))

    @staticmethod
    def block_sum(x) -> float:
        flat = x.reshape(-1)
        full = flat.size - flat.size % BLOCK
        total = float(flat[:full].reshape(-1, BLOCK).sum(axis=1).sum(dtype=np.float64)) if full else 0.0
        return total + float(flat[full:].sum(dtype=np.float64))

    @staticmethod
    def block_dot(x, y) -> float:
        """Re sum conj(x) y (x, y contiguous, same dtype)."""
        fx, fy = _flat(x), _flat(y)
        full = fx.size - fx.size % BLOCK
        total = 0.0
        if full:
            partial = np.matmul(fx[:full].reshape(-1, 1, BLOCK), fy[:full].reshape(-1, BLOCK, 1))
            total = float(partial.sum(dtype=np.float64))
        return total + float(np.dot(fx[full:].astype(np.float64), fy[full:].astype(np.float64)))

    @staticmethod
    def amax(x, axes):
        return np.max(x, axis=axes) if axes else x

    @staticmethod
    def masked(x, mask):
        """x where mask, 0 elsewhere (x finite and >= 0: a product, several times faster than np.where)."""
        return np.multiply(x, mask, out=np.empty(x.shape, x.dtype))

    @staticmethod
    def argmax(x) -> int:
        return int(np.argmax(x))

    @staticmethod
    def take(x, flat):
        if not x.ndim:
            return np.full(len(flat), x[()])
        if x.flags.c_contiguous:  # a flat gather: several times cheaper than indexing by unravelled tuples
            return x.reshape(-1).take(flat)
        return x[np.unravel_index(flat, x.shape)]

    @staticmethod
    def nonzero(mask):
        return np.flatnonzero(mask)

    @staticmethod
    def count(mask) -> int:
        return int(np.count_nonzero(mask))

    @staticmethod
    def to_numpy(x):
        return np.asarray(x)

    @staticmethod
    def contiguous(x):
        return np.asarray(x, order="C")

    @staticmethod
    def mask(mask, shape):
        mask = np.asarray(mask)
        if mask.dtype != bool or mask.shape != tuple(shape):
            raise ValueError(f"a region mask must be a boolean array of the chunk's shape {tuple(shape)}, "
                             f"got {mask.dtype} {mask.shape}")
        return mask

    @staticmethod
    def identical(a, b) -> bool:
        """Equal values everywhere (NaN never equals): a short prefix first, so a difference costs nothing.

        The rest compares bits as unsigned integers (one pass, no float compare): False for +0 vs -0 or
        equal NaNs, which only sends those chunks down the full path (a shortcut, never a verdict).
        """
        if a.ndim and not np.array_equal(a[:1], b[:1]):
            return False
        if a.dtype == b.dtype and a.shape == b.shape and a.flags.c_contiguous and b.flags.c_contiguous \
                and a.dtype.itemsize in (4, 8, 16) and a.size:
            word = np.uint32 if a.dtype.itemsize == 4 else np.uint64
            return bool(np.array_equal(a.reshape(-1).view(word), b.reshape(-1).view(word)))
        return bool(np.array_equal(a, b))

    @staticmethod
    def ratio(ad, aa, threshold: float):
        """|d| / max(|a|, threshold): the ratio where |a| >= threshold, a smaller number elsewhere."""
        out = np.maximum(aa, max(threshold, float(np.finfo(aa.dtype).tiny)), out=np.empty_like(aa))
        return np.divide(ad, out, out=out)

    @staticmethod
    def exact_magnitude_error(a, b) -> float:
        a64, b64 = a.astype(np.complex128), b.astype(np.complex128)
        return float(np.abs(np.abs(b64) - np.abs(a64)).max()) if a.size else 0.0

    @staticmethod
    def exact_phase_error(a, b, threshold: float) -> float:
        """max |angle(b conj(a))| over |a| >= threshold, in complex128 (an arctangent for a few elements only)."""
        a64, b64 = a.astype(np.complex128).reshape(-1), b.astype(np.complex128).reshape(-1)
        keep = np.abs(a64) >= threshold
        if not keep.any():
            return 0.0
        product = np.multiply(b64, np.conj(a64), out=b64)
        return max_angle(product.real, product.imag, keep)

    @staticmethod
    def phase_frontier(a, b, threshold: float):
        a64, b64 = a.astype(np.complex128).reshape(-1), b.astype(np.complex128).reshape(-1)
        magnitude = np.abs(a64)
        keep = magnitude >= threshold
        errors = np.abs(np.angle(b64[keep] * np.conj(a64[keep])))
        return phase_frontier.prune(magnitude[keep], errors)



def max_angle(re: np.ndarray, im: np.ndarray, keep: np.ndarray) -> float:
    """max |arctan2(im, re)| where ``keep``, evaluating the arctangent only where it can be the maximum.

    An element with re < 0, or re = 0 with im != 0, or re = -0 (atan2 gives pi there) has an angle of at
    least pi/2, above every other; among the rest |angle| = atan(|im| / re) grows with the ratio, so only
    the elements whose ratio ties the largest (to a few ulps) need the arctangent.
    """
    positive = re > 0
    acute = keep & positive
    rest = np.flatnonzero(keep & ~positive)  # usually few: the angle's sign conventions decided on them only
    if rest.size:
        re_rest, im_rest = re[rest], im[rest]
        obtuse = (re_rest < 0) | ((im_rest != 0) | np.signbit(re_rest))  # re is 0 where it is not < 0
        if obtuse.any():
            return float(np.abs(np.arctan2(im_rest[obtuse], re_rest[obtuse])).max())
    ratio = np.divide(np.abs(im), re, out=np.zeros(re.shape), where=acute)
    top = float(ratio.max())
    if top == 0.0:
        return 0.0
    near = np.flatnonzero(ratio >= top * (1 - 8 * np.finfo(np.float64).eps))
    return float(np.abs(np.arctan2(im[near], re[near])).max())
