"""The legacy TensorFlow code base (global params dict, flat patches) as a parity adapter."""

from parity import PluginAdapter, tap

from . import legacy_ptycho as legacy


class LegacyTF(PluginAdapter):
    frameworks = ("tf",)
    layouts = {"BHWC": "(B*C)HW1", "HW": "HW1", "positions": "(B*C)112"}
    not_provided = {"farfield": "diffract() fuses the FFT and the modulus",
                    "object.trimmed": "the legacy code never crops the canvas"}
    knobs = {"gaussian_sigma": 0.0}  # the legacy code has no smoothing: audited, never silently wrong

    def setup(self, cfg, weights):
        legacy.params.update({"N": cfg.N, "gridsize": cfg.gridsize, "offset": cfg.offset, "dtype": cfg.dtype,
                              "max_position_jitter": cfg.buffer, "probe.mask": cfg.probe_mask,
                              "intensity_scale": cfg.intensity_scale})

    canvas = tap("object.canvas")(lambda self, patches, offsets: legacy.reassemble_position(patches, offsets))
    extracted = tap("patches.extracted")(lambda self, canvas, offsets: legacy.extract_patches_position(canvas, offsets))
    exit_wave = tap("exit_wave")(lambda self, probe, patches: legacy.illuminate(probe, patches))
    amplitude = tap("amplitude", inputs=("exit_wave",))(lambda self, wave: legacy.diffract(wave))
    scaled = tap("amplitude.scaled")(lambda self, amplitude: legacy.scale_amplitude(amplitude))
    intensity = tap("intensity")(lambda self, scaled: scaled**2)

    @tap("probe.effective")
    def probe_effective(self, probe):
        return probe * legacy.probe_mask()[..., None] if self.cfg.probe_mask else probe
