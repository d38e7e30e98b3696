"""The tolerance table: parsing, selectors, last-match-wins, errors, dump/parse round trip, the shipped file."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from backends.common.config import ForwardConfig
from backends.common.regions import CANVAS_TAPS
from backends.common.taps import PIPELINES, pipeline_taps
from parity.errors import ParityInputError
from parity.metrics import Criteria
from parity.tolerances import Rule, ToleranceTable, device_class, dump_table, load_tolerances, parse_table

SHIPPED = Path(__file__).resolve().parent.parent / "fixtures" / "tolerances.toml"

TABLE_TEXT = """
schema = 1

[default]
max_rel_to_peak = 1e-3

[[rule]]
taps = ["*"]
max_rel_to_peak = 1e-4
note = "everything"

[[rule]]
taps = ["encoder.*", "decoder.amp"]
dtype = "float32"
max_rel_to_peak = 1e-5
atol = 1e-7
note = "network"

[[rule]]
taps = "farfield"
device = "cuda"
max_abs = 0.5

[[rule]]
taps = ["amplitude*"]
mode = "isolated"
pipeline = "physics"
min_cosine = 0.999

[[rule]]
taps = ["encoder.block1"]
dtype = "*"
max_rel_to_peak = 2e-5
"""


def _write(tmp_path: Path, text: str, name: str = "tolerances.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.fixture
def table(tmp_path) -> ToleranceTable:
    return load_tolerances(_write(tmp_path, TABLE_TEXT))


def _lookup(table, tap, dtype="float32", device="cpu", mode="propagated", pipeline="pinn"):
    return table.lookup(tap, dtype, device, mode, pipeline)


# ---- parsing ----

def test_parse_builds_rules_in_file_order(table, tmp_path):
    assert table.path == str(tmp_path / "tolerances.toml")
    assert table.default == Criteria(max_rel_to_peak=1e-3)
    assert [rule.index for rule in table.rules] == [0, 1, 2, 3, 4]
    assert table.rules[1] == Rule(taps=("encoder.*", "decoder.amp"), criteria=Criteria(max_rel_to_peak=1e-5, atol=1e-7),
                                  dtype="float32", note="network", index=1)
    assert table.rules[2].taps == ("farfield",)  # a single string is a one-element list
    assert table.rules[2].criteria == Criteria(max_abs=0.5)
    assert table.rules[4].dtype is None  # "*" means any


@pytest.mark.parametrize("text, fragment", [
    ("", "is empty; expected `schema = 1`"),
    ("schema = true\n[default]\natol = 1e-6\n", "key 'schema': expected 1, got True"),
    ("schema = 1.0\n[default]\natol = 1e-6\n", "key 'schema': expected 1, got 1.0"),
    ("[default]\nmode = 'isolated'\natol = 1e-6\n", "[default]: key(s) ['mode'] select taps"),
    ("[[rule]]\ntaps = '*'\nmin_cosine = -1.0\n", "min_cosine = -1 holds for any two arrays"),
    ("[[rule]]\ntaps = '*'\natol = 0.0\nmax_fraction_out = 1.0\n", "max_fraction_out = 1 lets every element out"),
    ("[[rule]]\ntaps = '*'\nmax_phase_error = 0.1\nphase_floor = 2.0\n", "phase_floor = 2 leaves no element"),
])
def test_a_table_that_would_silently_judge_less_is_refused(tmp_path, text, fragment):
    path = _write(tmp_path, text)
    with pytest.raises(ParityInputError) as caught:
        load_tolerances(path)
    assert str(caught.value).startswith(f"{path}: ") and fragment in str(caught.value), str(caught.value)


def test_default_when_the_file_has_no_default_table():
    table = parse_table({"schema": 1}, "t.toml")
    assert table.default == Criteria(max_rel_to_peak=1e-6) and table.rules == ()
    applied = table.lookup("farfield", "float32", "cpu", "isolated", "physics")
    assert applied.criteria == Criteria(max_rel_to_peak=1e-6) and applied.source == "t.toml [default]"


# ---- matching ----

def test_glob_matching(table):
    assert _lookup(table, "encoder.block0").criteria.max_rel_to_peak == 1e-5
    assert _lookup(table, "decoder.amp").criteria.max_rel_to_peak == 1e-5
    assert _lookup(table, "decoder.phase").criteria.max_rel_to_peak == 1e-4  # not listed: rule 0
    assert _lookup(table, "encoder").criteria.max_rel_to_peak == 1e-4  # "encoder.*" needs the dot


def test_glob_matching_is_case_sensitive(table):
    assert _lookup(table, "Encoder.block0").criteria.max_rel_to_peak == 1e-4


def test_dtype_selector(table):
    assert _lookup(table, "encoder.block0", dtype="float32").criteria.max_rel_to_peak == 1e-5
    assert _lookup(table, "encoder.block0", dtype="float64").criteria.max_rel_to_peak == 1e-4


def test_device_selector_uses_the_device_class(table):
    for device in ("cuda", "cuda:0", "cuda:3"):
        assert _lookup(table, "farfield", device=device).criteria == Criteria(max_abs=0.5), device
    assert _lookup(table, "farfield", device="cpu").criteria.max_rel_to_peak == 1e-4
    assert device_class("cuda:1") == "cuda" and device_class("cpu") == "cpu"


def test_mode_and_pipeline_selectors(table):
    assert _lookup(table, "amplitude.scaled", mode="isolated", pipeline="physics").criteria.min_cosine == 0.999
    assert _lookup(table, "amplitude", mode="propagated", pipeline="physics").criteria.min_cosine is None
    assert _lookup(table, "amplitude", mode="isolated", pipeline="pinn").criteria.min_cosine is None


def test_last_matching_rule_wins(table):
    applied = _lookup(table, "encoder.block1", dtype="float32")  # [[rule]]s 1, 2 and 5 match
    assert applied.criteria == Criteria(max_rel_to_peak=2e-5)
    assert applied.source == f"{table.path} [[rule]] 5 (taps encoder.block1)"
    applied = _lookup(table, "encoder.block0", dtype="float32")  # rules 0 and 1
    assert applied.source == f"{table.path} [[rule]] 2 (taps encoder.*, decoder.amp)" and applied.note == "network"


def test_order_matters():
    rules = [{"taps": "*", "max_rel_to_peak": 1e-4}, {"taps": "farfield", "max_rel_to_peak": 1e-8}]
    forward = parse_table({"rule": rules}, "a.toml")
    backward = parse_table({"rule": rules[::-1]}, "b.toml")
    assert forward.lookup("farfield", "float32", "cpu", "isolated", "pinn").criteria.max_rel_to_peak == 1e-8
    assert backward.lookup("farfield", "float32", "cpu", "isolated", "pinn").criteria.max_rel_to_peak == 1e-4


def test_default_fallback_when_no_rule_matches(tmp_path):
    path = _write(tmp_path, '[default]\natol = 1e-9\n[[rule]]\ntaps = "farfield"\ndtype = "float64"\n'
                            'max_rel_to_peak = 1e-12\n')
    table = load_tolerances(path)
    applied = table.lookup("farfield", "float32", "cpu", "propagated", "physics")
    assert applied.criteria == Criteria(atol=1e-9)
    assert applied.source == f"{path} [default]" and applied.note == ""


# ---- errors name the file, the rule and the key ----

@pytest.mark.parametrize("rule, fragment", [
    ('taps = "*"\ndtype = "float16"', "[[rule]] 2: key 'dtype': expected one of ('float32', 'float64')"),
    ('taps = "*"\ndtype = 32', "[[rule]] 2: key 'dtype'"),
    ('taps = "*"\ndevice = "tpu"', "[[rule]] 2: key 'device': expected one of ('cpu', 'cuda')"),
    ('taps = "*"\nmode = "both"', "[[rule]] 2: key 'mode': expected one of ('propagated', 'isolated')"),
    ('taps = "*"\npipeline = 3', "[[rule]] 2: key 'pipeline'"),
    ('taps = "*"\npipeline = "pnn"', "[[rule]] 2: key 'pipeline'"),
    ('taps = []', "[[rule]] 2: key 'taps'"),
    ('dtype = "float32"', "[[rule]] 2: key 'taps'"),
    ('taps = ["a", 3]', "[[rule]] 2: key 'taps'"),
    ('taps = ["encodr.*"]\nmax_rel_to_peak = 1e-6', "[[rule]] 2: key 'taps': 'encodr.*' matches no tap of the registry "
     "(did you mean 'encoder.*'"),
    ('taps = ["amplitude", "amplitud"]\natol = 1', "[[rule]] 2: key 'taps': 'amplitud' matches no tap"),
    ('taps = "*"\nmax_rel = 1e-6', "[[rule]] 2: unknown criteria key(s): max_rel"),
    ('taps = "*"\nrtol = "tight"', "[[rule]] 2: Criteria.rtol must be a number"),
    ('taps = "*"\nmax_rel_to_peak = -1.0', "[[rule]] 2: Criteria.max_rel_to_peak must be finite"),
    ('taps = "*"\nmin_cosine = 1.5', "[[rule]] 2: Criteria.min_cosine must be finite and in [-1.0, 1.0]"),
])
def test_bad_rule_names_file_and_rule_index(tmp_path, rule, fragment):
    path = _write(tmp_path, f'[[rule]]\ntaps = "*"\nmax_rel_to_peak = 1e-6\n\n[[rule]]\n{rule}\n')
    with pytest.raises(ParityInputError) as caught:
        load_tolerances(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: ") and fragment in message, message
    bad_value = re.search(r"= (.*)$", rule).group(1).strip('"')
    if "key 'taps'" not in fragment and "criteria" not in fragment and "Criteria" not in fragment:
        assert repr(bad_value) in message or bad_value in message, message  # the offending value is quoted


def test_bad_default_names_the_default_table(tmp_path):
    path = _write(tmp_path, "[default]\nmax_abs_error = 1.0\n")
    with pytest.raises(ParityInputError) as caught:
        load_tolerances(path)
    assert str(caught.value).startswith(f"{path}: [default]: unknown criteria key(s): max_abs_error")


def test_unknown_top_level_keys(tmp_path):
    path = _write(tmp_path, "schema = 1\ntolerance = 1e-6\n[[rules]]\ntaps = '*'\n")
    with pytest.raises(ParityInputError) as caught:
        load_tolerances(path)
    assert str(path) in str(caught.value) and "unknown top-level key(s) ['rules', 'tolerance']" in str(caught.value)


def test_rule_must_be_an_array_of_tables(tmp_path):
    path = _write(tmp_path, "[rule]\ntaps = '*'\n")
    with pytest.raises(ParityInputError, match=r"key 'rule': expected an array of tables") as caught:
        load_tolerances(path)
    assert str(path) in str(caught.value)


@pytest.mark.parametrize("text, key", [("rule = ['farfield']\n", "rule"), ("default = 1e-6\n", "default")])
def test_non_table_entries_are_input_errors(tmp_path, text, key):
    """Regression: these were AttributeErrors (a traceback and exit 1) instead of exit 2."""
    path = _write(tmp_path, text)
    with pytest.raises(ParityInputError) as caught:
        load_tolerances(path)
    assert str(caught.value).startswith(f"{path}: key '{key}': expected")


def test_unknown_pipeline_selector_is_an_error(tmp_path):
    """Regression: any string was accepted, so a typo silently never matched."""
    path = _write(tmp_path, '[[rule]]\ntaps = "*"\npipeline = "pnn"\nmax_rel_to_peak = 1e-5\n')
    with pytest.raises(ParityInputError, match=r"\[\[rule\]\] 1: key 'pipeline'"):
        load_tolerances(path)


def test_invalid_toml_and_missing_file(tmp_path):
    path = _write(tmp_path, "[[rule]\ntaps = '*'\n")
    with pytest.raises(ParityInputError, match="not valid TOML") as caught:
        load_tolerances(path)
    assert str(path) in str(caught.value)
    with pytest.raises(ParityInputError, match="tolerance file not found"):
        load_tolerances(tmp_path / "absent.toml")


# ---- dump / parse round trip ----

def _round_trip(table: ToleranceTable) -> ToleranceTable:
    text = dump_table(table, header="written by a test\n\nsecond paragraph")
    return parse_table(tomllib.loads(text), "round-trip.toml")


def test_dump_table_header_is_comments(table):
    text = dump_table(table, header="line one\n\nline three")
    assert text.startswith("# line one\n#\n# line three\nschema = 1\n")


def test_dump_parse_round_trip(table):
    """Regression: unset criteria were written as 'atol = None', which is not TOML."""
    assert "None" not in dump_table(table)
    again = _round_trip(table)
    assert again.default == table.default
    assert again.rules == table.rules


def test_dump_parse_round_trip_of_the_shipped_table():
    table = load_tolerances(SHIPPED)
    again = _round_trip(table)
    assert (again.default, again.rules) == (table.default, table.rules)


def test_dump_of_fully_specified_criteria_round_trips():
    """Every criterion set (nothing None): what dump_table can already write."""
    full = Criteria(max_rel_to_peak=1e-6, atol=1e-9, rtol=1e-7, max_fraction_out=0.01, max_abs=0.25,
                    min_cosine=0.99999, max_phase_error=1e-4, phase_floor=1e-2)
    table = ToleranceTable(default=full, rules=(
        Rule(taps=("encoder.*", 'encoder.block[!"\\]'), criteria=full, dtype="float32", device="cuda", mode="isolated",
             pipeline="pinn", note='quote " and backslash \\', index=0),
        Rule(taps=("*",), criteria=full, index=1)), path="x")
    again = _round_trip(table)
    assert again.default == full and again.rules == table.rules


# ---- the shipped table ----

@pytest.fixture(scope="module")
def shipped() -> ToleranceTable:
    return load_tolerances(SHIPPED)


def _all_taps() -> set[tuple[str, str]]:
    cfg = ForwardConfig(N=32)
    return {(pipeline, spec.name) for pipeline in PIPELINES for spec in pipeline_taps(pipeline, cfg)}


def test_shipped_float64_is_1e_12_everywhere(shipped):
    for pipeline, tap in _all_taps():
        for mode in ("propagated", "isolated"):
            for device in ("cpu", "cuda:0"):
                criteria = shipped.lookup(tap, "float64", device, mode, pipeline).criteria
                assert criteria.max_rel_to_peak == 1e-12, (pipeline, tap, mode, device)


def test_shipped_float32_pinn_propagated_is_1e_5(shipped):
    for pipeline, tap in _all_taps():
        if pipeline == "pinn":
            assert shipped.lookup(tap, "float32", "cpu", "propagated", "pinn").criteria.max_rel_to_peak == 1e-5, tap


def test_shipped_float32_physics_is_1e_6(shipped):
    for pipeline, tap in _all_taps():
        if pipeline in ("physics", "simulate"):
            for mode in ("propagated", "isolated"):
                applied = shipped.lookup(tap, "float32", "cpu", mode, pipeline)
                assert applied.criteria.max_rel_to_peak == 1e-6, (pipeline, tap, mode)
                rule = 5 if tap in CANVAS_TAPS else 1  # the canvas rule adds region criteria (issue #9)
                assert applied.source.startswith(f"{SHIPPED} [[rule]] {rule}"), applied.source


def test_shipped_float32_pinn_isolated_splits_network_and_physics(shipped):
    def bound(tap):
        return shipped.lookup(tap, "float32", "cpu", "isolated", "pinn").criteria.max_rel_to_peak

    assert bound("encoder.block0") == bound("decoder.phase") == bound("object.patches") == 1e-5
    assert bound("farfield") == bound("object.canvas") == bound("loss.poisson") == 1e-6


def test_shipped_rules_carry_notes(shipped):
    assert shipped.rules and all(rule.note for rule in shipped.rules)


def test_shipped_canvas_taps_are_judged_per_region_at_the_tap_bound(shipped):
    """Issue #9: the covered region and its complement each on their own peak, at the tap's own bound."""
    for pipeline, tap in _all_taps():
        for dtype in ("float32", "float64"):
            for mode in ("propagated", "isolated"):
                criteria = shipped.lookup(tap, dtype, "cpu", mode, pipeline).criteria
                regions = criteria.region_criteria
                if tap in CANVAS_TAPS:
                    assert set(regions) == {"covered", "uncovered"}, (pipeline, tap)
                    assert {r.max_rel_to_peak for r in regions.values()} == {criteria.max_rel_to_peak}
                else:
                    assert not regions, (pipeline, tap)


def test_region_criteria_parse_dump_and_errors():
    text = TABLE_TEXT + """
[[rule]]
taps = ["object.canvas"]
max_rel_to_peak = 1e-6
regions = { covered = { max_rel_to_peak = 1e-6, max_abs = 0.5 } }

[[rule]]
taps = ["object.trimmed"]
[rule.regions.border]
max_rel_to_sample_peak = 2e-6
"""
    table = parse_table(tomllib.loads(text), "t.toml")
    canvas = table.rules[-2].criteria.region_criteria["covered"]
    assert canvas == Criteria(max_rel_to_peak=1e-6, max_abs=0.5)
    assert table.rules[-1].criteria.region_criteria["border"].max_rel_to_sample_peak == 2e-6
    again = parse_table(tomllib.loads(dump_table(table)), "t.toml")
    assert again.rules == table.rules
    for bad, message in (('regions = { covered = { min_cosine = 0.9 } }', "a region can set only"),
                         ('regions = { covered = { max_rel_to_peak = -1.0 } }', "must be finite"),
                         ('regions = { covered = 3 }', "must be a table of criteria"),
                         ('regions = { covered = { bogus = 1 } }', "unknown criteria key")):
        with pytest.raises(ParityInputError, match=message):
            parse_table(tomllib.loads(f'[[rule]]\ntaps = "*"\n{bad}\n'), "t.toml")


@pytest.mark.parametrize(("taps", "region"), [("exit_wave", "covered"), ("object.canvas", "inner"),
                                              ("intensity", "uncovered")])
def test_a_rule_judging_a_region_the_tap_lacks_is_bad_usage_before_anything_runs(taps, region):
    from backends.torch import TorchBackend
    from parity.builtin_cases import builtin_case
    from parity.runner import run_case
    from parity.workflows import cast_case

    table = parse_table({"schema": 1, "default": {"max_rel_to_peak": 1e-6},
                         "rule": [{"taps": [taps], "max_rel_to_peak": 1e-6,
                                   "regions": {region: {"max_rel_to_peak": 1e-6}}}]}, "mine.toml")
    case = builtin_case("physics-default")
    case = cast_case(case, case.config.replace(N=32))

    class Untouchable(TorchBackend):
        def run_pipeline(self, *args, **kwargs):
            raise AssertionError("ran before the tolerance file was checked")

    with pytest.raises(ParityInputError, match=rf"mine\.toml \[\[rule\]\] 1 \(taps {re.escape(taps)}\): judges region\(s\) "
                                               rf"\['{region}'\] of tap '{re.escape(taps)}'"):
        run_case(case, Untouchable(), Untouchable(), table)


@pytest.mark.parametrize("document", [
    {"schema": 1, "default": {}},
    {"schema": 1, "default": {"max_rel_to_peak": 1e-6}, "rule": [{"taps": ["*"], "note": "loosen"}]},
    {"schema": 1, "default": {"max_rel_to_peak": 1e-6}, "rule": [{"taps": ["*"], "phase_floor": 0.1}]},
])
def test_a_rule_that_judges_nothing_is_refused(document):
    with pytest.raises(ParityInputError, match="sets no criterion, so every tap it matches would pass"):
        parse_table(document, "mine.toml")
