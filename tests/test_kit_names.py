"""A misspelt name in an adapter's declarations is refused when the adapter is built, never silently ignored."""

from __future__ import annotations

import pytest

from parity import PluginAdapter, tap
from tests.hostile import parity_process


class Port(PluginAdapter):
    layouts = {"BHWC": "BCHW", "positions": "BC12"}
    not_provided = {"farfield": "fused with the modulus"}

    @tap("object.canvas", inputs=("object_patches", "positions"))
    def canvas(self, patches, positions):
        return patches

    @tap("encoder.block*")
    def block(self, x, tap):
        return x


def test_a_port_whose_names_are_all_known_is_built():
    assert Port().name == "Port"


@pytest.mark.parametrize("change, fragment", [
    ({"intensty": tap("intensty")(lambda self, x: x)}, "@tap('intensty') on <lambda>() names no tap of the registry "
                                                       "(did you mean 'intensity'"),
    ({"layouts": {"BHWC": "BCHW", "position": "BC12"}}, "layouts key 'position' is neither a tap, an input nor a "
                                                        "canonical layout (did you mean 'positions'"),
    ({"not_provided": {"far_field": "fused"}}, "not_provided key 'far_field' names no tap of the registry "
                                               "(did you mean 'farfield'"),
    ({"wide": tap("decoder.*", "lossy.*")(lambda self, x: x)}, "@tap('lossy.*')"),
    ({"knobs": {"gaussian_smoothing_sigma": 0.0}}, "knobs key 'gaussian_smoothing_sigma' is no knob of the "
                                                   "configuration (did you mean 'gaussian_sigma'"),
    ({"knobs": {"gridsize": 0}}, "knobs {'gridsize': 0}: "),
])
def test_a_misspelt_declaration_is_refused_with_the_closest_names(change, fragment):
    typo = type("Typo", (Port,), change)
    with pytest.raises(ValueError) as caught:
        typo()
    assert fragment in str(caught.value), str(caught.value)


def test_the_cli_refuses_such_an_adapter_with_exit_2(tmp_path):
    (tmp_path / "typo_port.py").write_text(
        "from parity import PluginAdapter, tap\n\n"
        "class Typo(PluginAdapter):\n"
        "    @tap('intensty')\n"
        "    def intensity(self, x):\n"
        "        return x\n")
    result = parity_process("check", "--case", "physics-default", "--candidate", "typo_port:Typo", "--out",
                            tmp_path / "out", cwd=tmp_path, env={"PYTHONPATH": f"{tmp_path}:{parity_root()}"})
    assert result.returncode == 2 and "@tap('intensty')" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()


def parity_root() -> str:
    from tests.hostile import ROOT

    return str(ROOT)


def test_a_torch_port_method_returning_numpy_hands_the_next_method_a_tensor():
    """Propagated mode gives a later method what isolated mode gives it: a tensor, never the raw numpy result."""
    torch = pytest.importorskip("torch")
    from backends.common.config import resolve_config
    from parity import synthetic

    seen = {}

    class NumpyInTheMiddle(PluginAdapter):
        frameworks = ("torch",)

        @tap("object.canvas", inputs=("object_patches", "positions"))
        def canvas(self, patches, positions):
            return patches.numpy()[..., :1].repeat(1, axis=-1)  # a numpy result, the port's slip

        @tap("object.trimmed", inputs=("object.canvas",))
        def trimmed(self, canvas):
            seen["type"] = type(canvas)
            return canvas

    cfg = resolve_config({"N": 32})
    inputs = synthetic.pipeline_inputs("physics", cfg, 2, seed=0)
    got = {}
    NumpyInTheMiddle().run_pipeline("physics", cfg, inputs, sink=lambda spec, value: got.setdefault(spec.name, value))
    assert seen["type"] is torch.Tensor and set(got) == {"object.canvas", "object.trimmed"}


def test_a_setup_that_raises_is_one_cause_not_a_failure_per_stage(tmp_path):
    import json

    (tmp_path / "broken_port.py").write_text(
        "from parity import PluginAdapter, tap\n\n"
        "class Broken(PluginAdapter):\n"
        "    frameworks = ('torch',)\n\n"
        "    def setup(self, cfg, weights):\n"
        "        raise RuntimeError('extension acme_ops not built')\n\n"
        "    @tap('object.canvas')\n"
        "    def canvas(self, patches, positions):\n"
        "        return patches\n")
    result = parity_process("check", "--case", "physics-n32-edge-offsets-f64", "--candidate", "broken_port:Broken",
                            "--out", tmp_path / "out", cwd=tmp_path, timeout=300,
                            env={"PYTHONPATH": f"{tmp_path}:{parity_root()}"})
    assert result.returncode == 1, result.stderr
    report = json.loads((tmp_path / "out" / "physics-n32-edge-offsets-f64" / "report.json").read_text())
    assert report["stopped"] == ("the candidate could not be set up: Broken.setup() raised RuntimeError: extension "
                                 "acme_ops not built")
    assert report["stop_kind"] == "candidate"
