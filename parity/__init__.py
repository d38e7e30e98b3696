"""ptycho-parity: forward parity of a TensorFlow reference and its PyTorch port, tap by tap.

The public API (import from ``parity`` only; the modules behind it may move):

* ``PluginAdapter``, ``tap``, ``Layout``: wrap your own model as an adapter (``docs/adapters.md``);
* ``ForwardConfig``: the resolved configuration every adapter is handed;
* ``Case``, ``builtin_case``, ``BUILTIN_CASES``, ``case_from_arrays``: what to run; ``load_adapter``:
  ``tf``, ``torch`` or ``module:attr``;
* ``run_case``, ``RunOptions``, ``RunReport``, ``load_tolerances``: run and judge a case;
  ``write_case_outputs``: its ``report.json`` and ``report.html``, as the CLI writes them.

Names load on first use, so ``import parity`` costs neither TensorFlow nor PyTorch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "PluginAdapter": "parity.kit",
    "tap": "parity.kit",
    "Layout": "parity.layouts",
    "ForwardConfig": "backends.common.config",
    "Case": "parity.cases",
    "builtin_case": "parity.builtin_cases",
    "BUILTIN_CASES": "parity.builtin_cases",
    "case_from_arrays": "parity.workflows",
    "load_adapter": "parity.adapters",
    "run_case": "parity.runner",
    "RunOptions": "parity.runner",
    "RunReport": "parity.results",
    "load_tolerances": "parity.tolerances",
    "write_case_outputs": "parity.report",
    "weight_specs": "backends.common.weights",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'parity' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
