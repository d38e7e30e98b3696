"""The PyTorch port (an nn.Module, channels first, FFT and modulus fused) as a parity adapter."""

import torch

from parity import PluginAdapter, tap

from .port import ForwardModel


class TorchPort(PluginAdapter):
    frameworks = ("torch",)
    layouts = {"BHWC": "BCHW", "positions": "BC12", "probe": "111HW"}
    not_provided = {"farfield": "diffract() fuses the FFT and the modulus",
                    "object.trimmed": "the port never crops the canvas",
                    "probe.effective": "the port masks inside illuminate()"}
    knobs = {"gaussian_sigma": 0.0}  # the port has no smoothing

    def setup(self, cfg, weights):
        self.model = ForwardModel(cfg.N, cfg.gridsize, cfg.offset, cfg.buffer, cfg.probe_mask, cfg.intensity_scale,
                                  getattr(torch, cfg.dtype)).to(self.device)

    canvas = tap("object.canvas")(lambda self, patches, offsets: self.model.reassemble(patches, offsets))
    extracted = tap("patches.extracted")(lambda self, canvas, offsets: self.model.extract(canvas, offsets))
    exit_wave = tap("exit_wave")(lambda self, probe, patches: self.model.illuminate(probe, patches))
    amplitude = tap("amplitude", inputs=("exit_wave",))(lambda self, wave: self.model.diffract(wave))
    scaled = tap("amplitude.scaled")(lambda self, amplitude: self.model.intensity_scale * amplitude)
    intensity = tap("intensity")(lambda self, scaled: scaled * scaled)
