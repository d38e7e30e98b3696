"""Write fixtures/datasets/moon.npz: the shipped PtychoPINN-contract dataset (seeded, reproducible).

    PYTHONPATH=. python tools/make_moon_dataset.py

The arrays come from ``parity.dataset.simulate_moon_dataset`` (moon object,
fly001 probe, a jittered 4 x 4 raster, Poisson counts from numpy PCG64);
tests/test_dataset.py checks that the committed file still equals them.
"""

from __future__ import annotations

import numpy as np

from parity.data import fixtures_dir
from parity.dataset import MOON_DATASET, simulate_moon_dataset

if __name__ == "__main__":
    path = fixtures_dir() / MOON_DATASET
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, **simulate_moon_dataset())
    print(f"wrote {path} ({path.stat().st_size} bytes)")
