"""The checksums of a golden file: each dataset's sha256, and one digest of everything else.

``metadata_digest`` covers every attribute of the file and of its objects, every object's name, shape
and dtype; walking the file refuses links, external or virtual storage and group cycles, so a golden
holds its data itself and is read the same on every machine.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from typing import Any

import h5py
import numpy as np

from backends.common.hdf5 import oversized_chunks

from .errors import CorruptGoldenError

DIGEST_ATTR = "golden_sha256"
ROW_BYTES = 32 << 20  # checksum and copy in slices of about this many bytes


def _row_slices(shape: tuple[int, ...], itemsize: int) -> Iterator[slice | tuple]:
    if not shape:
        yield ()
        return
    row = max(1, itemsize * int(np.prod(shape[1:], dtype=np.int64)))
    step = max(1, ROW_BYTES // row)
    for start in range(0, shape[0], step):
        yield slice(start, min(start + step, shape[0]))


def dataset_digest(dataset: h5py.Dataset | np.ndarray) -> str:
    digest = hashlib.sha256()
    for part in _row_slices(dataset.shape, dataset.dtype.itemsize):
        digest.update(np.ascontiguousarray(dataset[part]).tobytes())
    return digest.hexdigest()


def _canonical(value: Any) -> Any:
    """Any attribute value as plain JSON, the same on every machine (unknown types by repr)."""
    if isinstance(value, np.ndarray):
        return {"array": value.dtype.str, "shape": list(value.shape),
                "values": [_canonical(item) for item in value.reshape(-1).tolist()]}
    if isinstance(value, np.generic):
        value = value.item()
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float):
        return {"float": repr(value)}
    if isinstance(value, bytes):
        return {"bytes": value.hex()}
    return {"repr": repr(value)}


def _attributes(obj: h5py.HLObject) -> dict[str, Any]:
    return {str(key): _canonical(obj.attrs[key]) for key in obj.attrs}


def _objects(h5: h5py.File) -> Iterator[tuple[str, h5py.Group | h5py.Dataset]]:
    """Every group and dataset by path; a golden holds no soft or external links (they could point anywhere)."""
    pending = [("", h5)]
    seen = {h5.id}  # groups by HDF5 object: a second hard link to a group (a cycle) would be walked forever
    while pending:
        prefix, group = pending.pop()
        for name in group:
            where = f"{prefix}{name}"
            link = group.get(name, getlink=True)
            if not isinstance(link, h5py.HardLink):
                raise ValueError(f"'{where}' is a {type(link).__name__}; a golden holds only groups and datasets")
            obj = group[name]
            if isinstance(obj, h5py.Dataset) and (obj.external or obj.is_virtual):
                # HDF5 external storage or a virtual dataset: the data would be read from another file (a FIFO
                # would hang the read), so the golden would neither travel nor stay what was recorded
                how = "virtual dataset" if obj.is_virtual else "external storage"
                raise ValueError(f"'{where}' stores its data outside the file ({how}); a golden holds its data itself")
            if isinstance(obj, h5py.Group):
                if obj.id in seen:
                    raise ValueError(f"'{where}' links to a group the file already holds under another name (a "
                                     "cycle, or a copy by reference); a golden holds each group once")
                seen.add(obj.id)
            yield where, obj
            if isinstance(obj, h5py.Group):
                pending.append((f"{where}/", obj))


def check_chunks(path: Any, where: str, dataset: h5py.Dataset) -> None:
    oversized = oversized_chunks(dataset)
    if oversized is not None:
        raise CorruptGoldenError(f"{path}: '{where}' {oversized}; a golden's chunks are at most its datasets' size: "
                                 "the file was changed after recording; re-record it with `parity record`")


def metadata_digest(h5: h5py.File) -> str:
    """sha256 of every attribute, object name, shape and dtype (data is covered by each dataset's sha256)."""
    objects = {}
    for where, obj in _objects(h5):
        entry: dict[str, Any] = {"attrs": _attributes(obj)}
        if isinstance(obj, h5py.Dataset):
            entry |= {"shape": list(obj.shape), "dtype": obj.dtype.str}
        objects[where] = entry
    root = {key: value for key, value in _attributes(h5).items() if key != DIGEST_ATTR}
    text = json.dumps({"root": root, "objects": objects}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()
