"""``parity run --dataset FILE.npz``: cases from a PtychoPINN dataset (contract in ``parity.dataset``).

Knobs resolve as for ``--inputs``: the dataset's defaults (N from the patterns,
PtychoPINN's intensity_scale, the measured photons per pattern, the inputs'
precision), then ``--config``, then ``--set``. The arrays are built in float64
and pass the same validation as ``--inputs`` (shapes, finiteness after the
cast to the run's dtype, degenerate inputs).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from .budget import check
from .cases import Case, user_case
from .dataset import arrays_for, default_knobs, load_dataset
from .errors import ParityInputError
from .inputs import load_weights, resolve_knobs, validate_inputs


def dataset_cases(path: str, pipeline: str | None, config_file: str | None, assignments: Sequence[str],
                  weights_file: str | None) -> tuple[list[Case], list[str]]:
    """One case per pipeline (``pinn``, and ``simulate`` when the dataset has an objectGuess), plus notes."""
    data = load_dataset(path)
    notes = list(data.notes)
    pipelines = [pipeline] if pipeline else ["pinn"] + (["simulate"] if data.obj is not None else [])
    if weights_file and "pinn" not in pipelines:
        raise ParityInputError(f"--weights is only for the pinn pipeline, not {pipelines}")
    cfg = resolve_knobs(config_file, assignments, defaults=default_knobs(data), defaults_source=str(path))
    if cfg.N != data.N:
        raise ParityInputError(f"{path}: key 'probeGuess': patterns and probe are {data.N} x {data.N}, "
                               f"but N={cfg.N} was set; expected N={data.N}")
    stem = Path(path).name.removesuffix(".npz")
    cases = []
    for name in pipelines:
        check(cfg, name, data.M, path)  # before the groups are built
        inputs = validate_inputs(path, name, cfg, arrays_for(name, data, cfg), data.file_keys())
        weights = load_weights(weights_file, cfg) if weights_file and name == "pinn" else None
        if name == "pinn" and weights is None:
            notes.append("no --weights: using the seeded Glorot initialisation (seed 0)")
        cases.append(user_case(f"dataset-{stem}-{name}", name, cfg, inputs, weights,
                               f"{name} on the dataset {Path(path).name} (M={data.M}, N={data.N})"))
    notes.append(f"{path}: intensity_scale={cfg.intensity_scale:g}, nphotons={cfg.nphotons:g} "
                 "(dataset defaults unless set)")
    return cases, notes
