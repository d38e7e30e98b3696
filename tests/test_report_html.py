"""``report.html`` and the evidence beside it, end to end through the CLI and ``run_and_write``.

Real TensorFlow reference, real Torch candidate (faults injected as a port would
have them), physics pipeline at N=32. The runs are made once per module.
"""

from __future__ import annotations

import base64
import contextlib
import errno
import io
import os
import json
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import h5py
import numpy as np
import pytest

pytest.importorskip("backends.tf", reason="TensorFlow (the reference) is not installed")
pytest.importorskip("backends.torch", reason="PyTorch (the candidate) is not installed")

from PIL import Image  # noqa: E402

from backends.common.taps import pipeline_taps  # noqa: E402
from backends.torch.stages import STAGES  # noqa: E402
from parity.builtin_cases import builtin_case  # noqa: E402
from parity.cli import main  # noqa: E402
from parity.errors import EXIT_BAD_INPUT, EXIT_DIVERGED, EXIT_OK  # noqa: E402
from parity.evidence import load_samples, region_split  # noqa: E402
from parity.runner import RunOptions  # noqa: E402
from parity.workflows import cast_case, run_and_write, tolerance_table  # noqa: E402

CASE = builtin_case("physics-default")
SMALL_CASE = cast_case(CASE, CASE.config.replace(N=32))
CFG = SMALL_CASE.config
TAPS = [spec.name for spec in pipeline_taps("physics", CFG)]
PATCH_TAPS = [spec.name for spec in pipeline_taps("physics", CFG) if spec.pictures == "patches"]
ARGS = ["--case", "physics-default", "--set", "N=32"]


def cli(*args) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(arg) for arg in args])
    return code, out.getvalue(), err.getvalue()


class Page(HTMLParser):
    """The parts of report.html the tests look at."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.sections: list[dict[str, str]] = []
        self.images: list[dict[str, str]] = []
        self.links: list[str] = []
        self.tags: set[str] = set()
        self.feed(text)
        self.close()

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.add(tag)
        if tag == "section" and "tap" in attrs.get("class", "").split():
            self.sections.append(attrs)
        elif tag == "img":
            self.images.append(attrs)
        elif tag == "a":
            self.links.append(attrs.get("href", ""))


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """Saved runs: passing (two cases), faulty far field (with tap dumps), raising far field."""
    root = tmp_path_factory.mktemp("runs")
    code, out, err = cli("run", *ARGS, "--case", "physics-n32-edge-offsets-f64", "--out", root / "pass")
    assert code == EXIT_OK, err
    assert "all cases" in out and "physics-n32-edge-offsets-f64" in out.split("all cases")[1]
    assert "running" not in out + err  # the progress bar is transient and never lands in a log
    code, _, err = cli("run", *ARGS, "--candidate", "tests.faulty_adapters:FaultyTorch", "--dump-taps",
                       "--out", root / "faulty")
    assert code == EXIT_DIVERGED, err
    code, _, err = cli("run", *ARGS, "--candidate", "tests.faulty_adapters:RaisingTorch", "--out", root / "raising")
    assert code == EXIT_DIVERGED, err
    return {"pass": root / "pass" / "physics-default", "faulty": root / "faulty" / "physics-default",
            "raising": root / "raising" / "physics-default", "pass_root": root / "pass", "root": root}


def _page(folder: Path) -> tuple[str, Page]:
    text = (folder / "report.html").read_text(encoding="utf-8")
    return text, Page(text)


def test_the_page_is_self_contained_and_every_image_decodes(runs):
    for name in ("pass", "faulty", "raising"):
        text, page = _page(runs[name])
        assert "<script" not in text and "http://" not in text and "https://" not in text
        assert not [link for link in page.links if not link.startswith("#")]  # links stay inside the page
        assert page.images, name
        for image in page.images:
            prefix = "data:image/png;base64,"
            assert image["src"].startswith(prefix)
            decoded = Image.open(io.BytesIO(base64.b64decode(image["src"][len(prefix):])))
            decoded.load()
            assert decoded.size == (int(image["width"]), int(image["height"])), image["alt"]
            assert decoded.size[0] >= 300 and decoded.size[1] >= 150


def test_taps_appear_in_stage_order_and_the_first_divergence_is_marked(runs):
    _, page = _page(runs["faulty"])
    assert [section["id"] for section in page.sections] == [f"tap-{name}" for name in TAPS]
    marked = [section["id"] for section in page.sections if "first" in section["class"].split()]
    assert marked == ["tap-farfield"]
    assert "#tap-farfield" in page.links  # the summary links to it
    classes = {section["id"]: section["class"].split() for section in page.sections}
    assert "fail" in classes["tap-amplitude"] and "pass" in classes["tap-exit_wave"]
    _, passing = _page(runs["pass"])
    assert not [s for s in passing.sections if "first" in s["class"].split()]


def test_pictures_for_image_taps_and_patch_grids_from_the_registry(runs):
    text, page = _page(runs["faulty"])
    alts = [image["alt"] for image in page.images]
    assert "error vs depth" in alts
    for name in TAPS:  # every physics tap is an image tap: its worst sample is drawn (propagated)
        assert any(alt.startswith(f"{name} (propagated)") for alt in alts), name
    assert any(alt.startswith("farfield (isolated)") for alt in alts)  # isolated fails there: drawn too
    assert not any(alt.startswith("exit_wave (isolated)") for alt in alts)
    assert PATCH_TAPS == ["patches.extracted", "amplitude"]
    for name in PATCH_TAPS:
        png = runs["faulty"] / f"patches-{name}.png"
        assert png.exists() and f"patch grid of {name}" in alts
    assert sorted(path.name for path in runs["faulty"].glob("patches-*.png")) == sorted(
        f"patches-{name}.png" for name in PATCH_TAPS)


def test_patch_stats_canvas_and_offsets_files(runs):
    folder = runs["faulty"]
    stats = json.loads((folder / "patch_stats.json").read_text())
    with h5py.File(folder / "taps_reference.h5") as h5:
        canvas = h5["taps/object.canvas"][()]
        amplitude = h5["taps/amplitude"][()]
    with h5py.File(folder / "taps_candidate.h5") as h5:
        candidate = h5["propagated/amplitude"][()]
    entry = stats["taps"]["amplitude"]
    assert entry["value"] == "value" and entry["batches_seen"] == {"reference": 1, "propagated": 1, "isolated": 1}
    assert entry["reference"][0]["mean"] == pytest.approx(amplitude.mean(dtype=np.float64), rel=1e-9)
    assert entry["propagated"][0]["mean"] == pytest.approx(candidate.mean(dtype=np.float64), rel=1e-9)
    assert entry["propagated"][0]["mean"] / entry["reference"][0]["mean"] == pytest.approx(1.01, rel=1e-4)
    patches = np.moveaxis(amplitude.astype(np.float64), (1, 2), (2, 3)).reshape(-1, CFG.N * CFG.N)
    assert entry["reference"][0]["var_zero_mean"] == pytest.approx(patches.var(axis=1).mean(), rel=1e-9)
    assert entry["reference"][0]["first_patches"][3]["max"] == pytest.approx(patches[3].max())
    assert stats["taps"]["object.canvas"]["value"] == "modulus"
    document = json.loads((folder / "canvas.json").read_text())
    assert document["tap"] == "object.canvas" and document["patch_size"] == [CFG.N, CFG.N]
    assert document["n_slots"] == CFG.C and document["reference"]["canvas_size"] == [CFG.P, CFG.P]
    assert document["reference"]["peak_modulus"] == pytest.approx(np.abs(canvas).max(), rel=1e-6)
    positions = SMALL_CASE.inputs["positions"].astype(np.float64)
    offsets = json.loads((folder / "offsets.json").read_text())
    assert offsets["tap"] == "positions" and offsets["reference"]["count"] == positions[:, 0, 0, :].size
    assert offsets["reference"]["std_dx"] == pytest.approx(positions[:, 0, 0, :].std())
    assert document["reference"]["max_abs_dy"] == pytest.approx(np.abs(positions[:, 0, 1, :]).max())


def test_kept_samples_are_the_candidates_values(runs):
    samples = load_samples(runs["faulty"] / "samples.h5")
    kept = samples[("propagated", "farfield")]
    with h5py.File(runs["faulty"] / "taps_candidate.h5") as h5:
        candidate = h5["propagated/farfield"][()]
    assert np.array_equal(kept.candidate, candidate[kept.index])
    assert len(kept.worst) == 1 and set(kept.index) == set(kept.worst) | set(kept.first)  # the worst: the picture


def test_a_raising_candidate_still_gets_a_report_naming_the_stage(runs):
    text, page = _page(runs["raising"])
    assert [s["id"] for s in page.sections if "first" in s["class"].split()] == ["tap-farfield"]
    assert "FloatingPointError: " in text and "injected fault" in text
    assert "not reached: the candidate failed at &#x27;farfield&#x27;" in text or "not reached: the candidate failed at 'farfield'" in text
    assert (runs["raising"] / "report.json").exists()


def _nan_farfield(ctx, wave):
    return STAGES["farfield"](ctx, wave) * float("nan")


def test_a_candidate_returning_nan_gets_a_report_naming_the_stage(tmp_path, reference):
    from backends.torch import TorchBackend

    candidate = TorchBackend().with_stage("farfield", _nan_farfield)
    report = run_and_write(SMALL_CASE, reference, candidate, tolerance_table(None), RunOptions(), tmp_path)
    assert report.first_divergence.tap == "farfield"
    text, page = _page(tmp_path / SMALL_CASE.name)
    assert [s["id"] for s in page.sections if "first" in s["class"].split()] == ["tap-farfield"]
    assert "NaN / Inf" in text
    kept = load_samples(tmp_path / SMALL_CASE.name / "samples.h5")[("propagated", "farfield")]
    assert np.isinf(kept.error).all()  # a sample with NaN where the reference is finite ranks worst
    for image in page.images:
        Image.open(io.BytesIO(base64.b64decode(image["src"].split(",", 1)[1]))).load()


def _ring(ctx, patches, offsets):
    """Port bug: the canvas's empty border band filled with a constant (three outermost pixels)."""
    out = STAGES["object_canvas"](ctx, patches, offsets).clone()
    for edge in (slice(0, 3), slice(-3, None)):
        out[..., edge, :] += 1.0
        out[..., :, edge] += 1.0
    return out


def _centre(ctx, patches, offsets):
    """Port bug: a smear in the middle of the canvas."""
    out = STAGES["object_canvas"](ctx, patches, offsets).clone()
    middle = slice(CFG.P // 2 - 4, CFG.P // 2 + 4)
    out[..., middle, middle] *= 1.5
    return out


def _regions(folder: Path, tap: str, mode: str) -> dict:
    """The report's interior/border split: the comparator's breakdown when present, else from the evidence."""
    document = json.loads((folder / "report.json").read_text())
    metrics = next(t for t in document["taps"] if t["name"] == tap)["modes"][mode]["metrics"]
    if metrics.get("breakdown"):
        return metrics["breakdown"]["regions"]
    kept = load_samples(folder / "samples.h5")[(mode, tap)]
    return region_split(kept.reference, kept.candidate, kept.layout)


@pytest.mark.parametrize("fault, bad, good", [(_ring, "border", "interior"), (_centre, "interior", "border")])
def test_the_interior_border_split_tells_where_the_fault_is(tmp_path, reference, fault, bad, good):
    from backends.torch import TorchBackend

    candidate = TorchBackend().with_stage("object_canvas", fault)
    options = RunOptions(modes=("isolated",), taps=("object.canvas",))
    report = run_and_write(SMALL_CASE, reference, candidate, tolerance_table(None), options, tmp_path)
    assert report.first_divergence.tap == "object.canvas"
    regions = _regions(tmp_path / SMALL_CASE.name, "object.canvas", "isolated")
    assert float(regions[bad]["max_rel"]) > 1e-4 and float(regions[good]["max_rel"]) <= 1e-6
    text = (tmp_path / SMALL_CASE.name / "report.html").read_text()
    assert "Interior vs border" in text or "Regions (border band" in text


def test_parity_report_re_renders_a_saved_run_identically(runs, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(runs["faulty"], copy)
    original = (copy / "report.html").read_text()
    (copy / "report.html").unlink()
    code, out, err = cli("report", copy)
    assert code == EXIT_OK, err
    assert (copy / "report.html").read_text() == original
    code, out, _ = cli("report", runs["pass_root"])  # an --out folder: every case in it
    assert code == EXIT_OK and out.count("wrote ") == 2
    code, _, err = cli("report", tmp_path / "nothing-here")
    assert code == EXIT_BAD_INPUT and "no report.json" in err


def test_parity_report_on_damaged_evidence_or_an_unwritable_page_is_bad_input(runs, tmp_path, monkeypatch):
    truncated = tmp_path / "truncated"
    shutil.copytree(runs["faulty"], truncated)
    samples = truncated / "samples.h5"
    samples.write_bytes(samples.read_bytes()[: samples.stat().st_size // 2])
    code, _, err = cli("report", truncated)
    assert code == EXIT_BAD_INPUT and "samples.h5: not a samples file this harness wrote, or a damaged one" in err
    blocked = tmp_path / "blocked"
    shutil.copytree(runs["faulty"], blocked)
    before = (blocked / "report.html").read_bytes()
    import parity.atomic_files as atomic_files

    opened = os.open

    def read_only_folder(path, flags, *args):  # what a read-only mount says, even to root
        if flags & os.O_CREAT and Path(path).parent == blocked:
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
        return opened(path, flags, *args)

    monkeypatch.setattr(atomic_files.os, "open", read_only_folder)
    code, _, err = cli("report", blocked)
    monkeypatch.undo()
    assert code == EXIT_BAD_INPUT and "cannot write report.html there (Read-only file system)" in err, err
    assert (blocked / "report.html").read_bytes() == before


def test_parity_diff_before_and_after_a_fix(runs, tmp_path):
    code, out, _ = cli("diff", runs["faulty"], runs["pass"])
    assert code == EXIT_OK and "fixed" in out and "0 worse" in out
    code, out, _ = cli("diff", runs["pass"], runs["faulty"])
    assert code == EXIT_DIVERGED and "worse" in out.split("tap by tap")[1]
    # farfield in both modes; amplitude, amplitude.scaled and intensity propagated
    assert "farfield" in out and "5 worse" in out
    code, out, _ = cli("diff", runs["faulty"], runs["faulty"] / "report.json")
    assert code == EXIT_OK and "0 worse" in out
    other = runs["pass_root"] / "physics-n32-edge-offsets-f64"
    code, _, err = cli("diff", runs["pass"], other)
    assert code == EXIT_BAD_INPUT and "not the same case" in err


@pytest.mark.skipif(shutil.which("chromium") is None,
                    reason="chromium is not installed (Debian: apt-get install chromium)")
def test_report_renders_in_headless_chromium(runs, tmp_path):
    shot = tmp_path / "shot.png"
    command = ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}", "--window-size=1360,2400",
               (runs["faulty"] / "report.html").as_uri()]
    subprocess.run(command, check=True, capture_output=True, timeout=120)
    image = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    assert image.shape == (2400, 1360, 3)
    red = (image[..., 0] > 180) & (image[..., 1] < 80) & (image[..., 2] < 80)  # FAIL badges, the first divergence
    assert red.sum() > 200
    assert len(np.unique(image.reshape(-1, 3), axis=0)) > 200  # the plot and tables drew, not a blank page


def _section(text: str, tap: str) -> str:
    start = text.index(f'id="tap-{tap}"')
    return text[start: text.index("</section>", start)]


def test_fields_other_engineers_add_are_rendered_when_present(runs, tmp_path):
    """metrics.breakdown (comparator), diagnoses (diagnosis), status/reason (adapter kit)."""
    copy = tmp_path / "copy"
    shutil.copytree(runs["faulty"], copy)
    document = json.loads((copy / "report.json").read_text())
    taps = {tap["name"]: tap for tap in document["taps"]}
    region = {"max_abs_error": 16.0, "peak": 1600.0, "max_rel": 0.01}
    taps["farfield"]["modes"]["isolated"]["metrics"]["breakdown"] = {
        "worst": {"sample": 0, "channel": 1, "index": [0, 0, 0, 1]},
        "by_sample": [{"sample": 0, "max_abs_error": 16.0, "peak": 1600.0, "max_rel": 0.01}],
        "by_channel": [{"channel": 1, "max_abs_error": 16.0, "peak": 1600.0, "max_rel": 0.01}],
        "regions": {"interior": dict(region, max_rel=0.0023), "border": region}, "border_width": 8}
    taps["farfield"]["modes"]["isolated"]["diagnoses"] = [
        {"kind": "scale", "summary": "candidate = 1.01 x reference", "residual": 3e-8}]
    why = "not compared: the candidate does not provide it (fused with the exit wave)"
    taps["probe.effective"].update(status="not_compared", reason=why, passed=None)
    for mode in taps["probe.effective"]["modes"].values():
        mode.update(status="not_provided", skip_kind="not_provided", skipped=why, passed=None, metrics=None)
    (copy / "report.json").write_text(json.dumps(document))
    code, _, err = cli("report", copy)
    assert code == EXIT_OK, err
    text = (copy / "report.html").read_text()
    farfield = _section(text, "farfield")
    assert "Regions (border band 8 px)" in farfield and "By sample (top 5)" in farfield
    assert "Interior vs border (from the kept samples" not in farfield  # the comparator's numbers win
    assert "candidate = 1.01 x reference" in farfield and "scale" in farfield
    assert "(fused with the exit wave)" in text.split('id="tap-')[0]  # named in the summary


def test_a_report_without_evidence_or_comparisons_still_renders(runs, tmp_path):
    """An audit failure compares nothing; a version-1 report has no evidence files beside it."""
    document = json.loads((runs["pass"] / "report.json").read_text())
    document["schema_version"] = 1
    document["passed"] = False
    document["first_divergence"] = {"tap": None, "mode": "config", "messages": ["candidate resolves N=64"],
                                    "inherited": False}
    for tap in document["taps"]:
        tap["modes"], tap["passed"] = {}, None
    (tmp_path / "report.json").write_text(json.dumps(document))
    code, _, err = cli("report", tmp_path)
    assert code == EXIT_OK, err
    text, page = _page(tmp_path)
    assert "config</b> audit" in text and "candidate resolves N=64" in text
    assert [s["id"] for s in page.sections] == [f"tap-{name}" for name in TAPS]
    assert all("unjudged" in s["class"].split() for s in page.sections)


def test_parity_diff_between_dtypes_does_not_call_precision_a_fix():
    """A float64 run's errors are ~1e-9 of a float32 run's with no fix made: not "better", but said."""
    from parity.rundiff import diff_reports

    def report(dtype: str, error: float, passed: bool) -> dict:
        mode = {"passed": passed, "metrics": {"max_rel_to_peak": error, "passed": passed},
                "tolerance": {"criteria": {"max_rel_to_peak": 1e-6}}}
        return {"case": {"name": "c"}, "pipeline": "physics",
                "taps": [{"name": "farfield", "dtype": dtype, "modes": {"propagated": mode}}]}

    (change,) = diff_reports(report("complex64", 1e-7, True), report("complex128", 1e-16, True))
    assert change.verdict == "retyped" and not change.worse
    (change,) = diff_reports(report("complex64", 1e-7, True), report("complex64", 1e-16, True))
    assert change.verdict == "better"
    (change,) = diff_reports(report("complex64", 1e-7, True), report("complex128", 1e-3, False))
    assert change.verdict == "worse" and change.worse  # a verdict that flips still counts
