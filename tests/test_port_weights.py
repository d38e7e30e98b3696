"""A candidate's ``canonical_weights()`` (its parameters mapped back to the canonical names and the Keras
layout) is audited against the weights it was given: a bias never loaded, a kernel mapped one way and back
another, a parameter left out are named before any tap."""

from __future__ import annotations

import numpy as np
import torch
import pytest

from backends.torch import TorchBackend
from parity.audits import port_weights_audit
from parity.builtin_cases import builtin_case
from parity.runner import RunOptions, run_case
from parity.workflows import tolerance_table

CASE = "pinn-n32-single-patch"


class MapsBack(TorchBackend):
    """The Torch port, with a mapping back that loses what ``damage`` says."""

    name = "maps-back"
    damage: str | None = None

    def run_pipeline(self, pipeline, cfg, inputs, weights=None, sink=None, taps=None):
        self.given = dict(weights or {})
        return super().run_pipeline(pipeline, cfg, inputs, weights, sink, taps)

    def canonical_weights(self):
        mapped = {name: value.copy() for name, value in self.given.items()}
        if self.damage == "bias":
            mapped["encoder.block0.conv0.bias"][...] = 0  # a strict=False load that left the bias at zero
        elif self.damage == "transpose":
            mapped["encoder.block0.conv1.kernel"] = mapped["encoder.block0.conv1.kernel"].transpose(1, 0, 2, 3)
        elif self.damage == "missing":
            del mapped["decoder.amp.block0.conv0.kernel"]
        return mapped


@pytest.fixture(scope="module")
def case():
    return builtin_case(CASE)


def _run(case, damage):
    candidate = MapsBack()
    candidate.damage = damage
    return run_case(case, TorchBackend(), candidate, tolerance_table(None), RunOptions(modes=("propagated",)))


def test_a_mapping_that_gives_every_parameter_back_passes(case):
    report = _run(case, None)
    audit = next(audit for audit in report.audits if audit.name == "port weights")
    assert report.passed and audit.passed and len(audit.details["parameters"]) == len(case.weights)


@pytest.mark.parametrize("damage, words", [
    ("bias", "parameter 'encoder.block0.conv0.bias': the port's differs"),
    ("transpose", "parameter 'encoder.block0.conv1.kernel': the port's differs"),
    ("missing", "parameter 'decoder.amp.block0.conv0.kernel': missing from canonical_weights()"),
])
def test_a_parameter_that_does_not_come_back_fails_the_audit_first(case, damage, words):
    report = _run(case, damage)
    assert not report.passed
    assert report.first_divergence.kind == "audit" and report.first_divergence.mode == "port weights"
    assert any(words in message for message in report.first_divergence.messages), report.first_divergence.messages


def test_junk_from_canonical_weights_is_a_failed_audit_not_a_crash():
    expected = {"a.kernel": np.ones((3, 3, 1, 2), np.float32)}
    assert "returned list" in port_weights_audit(expected, [1, 2]).messages[0]
    assert "raised" in port_weights_audit(expected, RuntimeError("boom")).messages[0]
    audit = port_weights_audit(expected, {"a.kernel": np.ones((2, 3, 3, 1)), "b": np.zeros(1)})
    assert not audit.passed and any("shape (2, 3, 3, 1)" in text for text in audit.messages)
    assert any("'b': not a parameter" in text for text in audit.messages)


class LoadsBiasesSwapped(TorchBackend):
    """A subclass of the built-in port whose own loading swaps two biases (no canonical_weights of its own)."""

    name = "loads-biases-swapped"

    def build_params(self, cfg, weights):
        network = super().build_params(cfg, weights)
        conv0, conv1 = network.encoder.blocks[0].conv0.bias, network.encoder.blocks[0].conv1.bias
        with torch.no_grad():
            held = conv0.detach().clone()
            conv0.copy_(conv1)
            conv1.copy_(held)
        return network


class BuildsItsOwnParameters(TorchBackend):
    """Runs through another backend: it never built a network of its own, so nothing maps back and no port
    weights audit is made (canonical_weights raises NotImplementedError), rather than a failed one."""

    name = "builds-its-own"

    def run_pipeline(self, pipeline, cfg, inputs, weights=None, sink=None, taps=None):
        return TorchBackend.run_pipeline(TorchBackend(self.device), pipeline, cfg, inputs, weights, sink, taps)


def test_the_built_in_ports_subclass_is_audited_on_the_parameters_it_loaded(case):
    plain = run_case(case, TorchBackend(), TorchBackend(), tolerance_table(None), RunOptions(modes=("propagated",)))
    assert plain.passed and any(audit.name == "port weights" and audit.passed for audit in plain.audits)
    swapped = run_case(case, TorchBackend(), LoadsBiasesSwapped(), tolerance_table(None),
                       RunOptions(modes=("propagated",)))
    assert swapped.first_divergence.mode == "port weights"
    assert any("'encoder.block0.conv0.bias'" in message for message in swapped.first_divergence.messages)
    own = run_case(case, TorchBackend(), BuildsItsOwnParameters(), tolerance_table(None),
                   RunOptions(modes=("propagated",)))
    assert own.passed and not any(audit.name == "port weights" for audit in own.audits)


class CannotBuild(TorchBackend):
    name = "cannot-build"

    def build_params(self, cfg, weights):
        raise ValueError("negative strides are not supported")


def test_a_port_whose_parameters_cannot_be_built_is_named_as_not_set_up_not_a_tap(case):
    report = run_case(case, TorchBackend(), CannotBuild(), tolerance_table(None))
    assert not report.passed and report.first_divergence.mode == "setup"
    assert "building its parameters (build_params) raised ValueError: negative strides" in report.first_divergence.messages[0]
    assert report.tap("input.scaled").modes["propagated"].error_kind == "setup"


@pytest.mark.parametrize("rearrange, words", [
    (lambda k: k.transpose(1, 0, 2, 3), "H and W swapped"),
    (lambda k: k[::-1, ::-1], "rotated by 180 degrees"),
    (lambda k: k[:, :, ::-1, :], "input channels in reversed order"),
    (lambda k: k[..., ::-1], "output channels in reversed order"),
    (lambda k: k.reshape(4, 2, 3, 3).transpose(2, 3, 1, 0), "reshaped to (out, in, H, W) instead of permuted"),
    (lambda k: -k, "the opposite sign"),
])
def test_a_kernel_mapped_with_a_usual_slip_is_named_by_it(rearrange, words):
    kernel = np.random.Generator(np.random.PCG64(3)).normal(size=(3, 3, 2, 4)).astype(np.float32)
    audit = port_weights_audit({"k.kernel": kernel}, {"k.kernel": np.ascontiguousarray(rearrange(kernel))})
    assert not audit.passed and words in audit.messages[0], audit.messages
