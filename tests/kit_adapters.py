"""Plug-in adapters for the kit's tests, loaded as ``tests.kit_adapters:NAME``. No built-in backend is imported."""

from parity import PluginAdapter, tap


class TFOnly(PluginAdapter):
    """Declares TensorFlow; its module never imports it: the harness applies the switch itself."""

    frameworks = ("tf",)

    @tap("input.scaled")
    def scaled(self, X):
        return X / self.cfg.intensity_scale
