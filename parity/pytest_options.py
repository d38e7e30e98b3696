"""The pytest plugin's command-line options and ini keys (declared only; ``pytest_settings`` resolves them).

Kept free of numpy and the harness: the plugin is loaded in every pytest
session of an environment where the package is installed, and a session
that configures no candidate should not pay for the harness's imports.
"""

from __future__ import annotations

import pytest

LISTS = ("cases", "inputs")  # options that repeat, ini keys that hold one entry per line

# (name, metavar, help); every --parity-NAME option has an ini twin parity_NAME, so a team configures it once.
OPTIONS = (
    ("candidate", "MODULE:ATTR", "the implementation under test: torch, tf or an adapter import path; "
     "setting it turns on the generated suite (one test per case x tap)"),
    ("reference", "REF", "what the candidate is judged against: tf, torch, MODULE:ATTR, 'golden' (the "
     "recorded goldens, no TensorFlow needed) or a goldens folder (default tf)"),
    ("device", "{cpu,cuda,auto}", "the candidate's device (default cpu; auto: cuda when available)"),
    ("cases", "GLOB", "built-in cases to run, fnmatch globs (repeatable; default all)"),
    ("inputs", "'PIPELINE FILE.npz [WEIGHTS] [KNOB=VALUE ...]'", "a user case from your own inputs (repeatable; "
     "when given, built-in cases run only if --parity-cases names them)"),
    ("tolerances", "FILE.toml", "the tolerance table (default the harness's fixtures/tolerances.toml)"),
    ("out", "DIR", "where each case's report.json goes (default under pytest's basetemp)"),
    ("baselines", "DIR|off", "regression baselines of the candidate's taps (default parity_baselines/)"),
)
INI_ONLY = (
    ("parity_baseline_array_kib", "cases whose taps total at most this many KiB keep every tap "
     "(ndarrays_regression); larger ones keep per-tap statistics (data_regression); default 1024"),
    ("parity_suite_dir", "the folder the generated tests appear in (default: the first testpaths "
     "entry, else the first folder the session collects)"),
)


def add_options(parser: pytest.Parser) -> None:
    group = parser.getgroup("parity", "TF-vs-PyTorch forward parity (ptycho-parity)")
    for name, metavar, text in OPTIONS:
        group.addoption(f"--parity-{name}", dest=f"parity_{name}", metavar=metavar, help=text,
                        action="append" if name in LISTS else "store", default=None)
        parser.addini(f"parity_{name}", text, type="linelist" if name in LISTS else "string",
                      default=[] if name in LISTS else "")
    for key, text in INI_ONLY:
        parser.addini(key, text, type="string", default="")


def configured(config: pytest.Config) -> bool:
    """Whether any parity option or ini key is set (if none is, nothing is resolved until a fixture asks)."""
    names = [f"parity_{name}" for name, _, _ in OPTIONS]
    return (any(config.getoption(name) not in (None, []) for name in names)
            or any(config.getini(name) not in ("", []) for name in names + [key for key, _ in INI_ONLY]))
