"""Renorm constants: quadrature through the module itself, checked against scipy's quad on
closed-form numpy functions (an independent computation) to 1e-5 relative."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn as nn
from scipy import integrate, special

import initlint
from initlint.errors import InitlintError
from initlint.moments import is_elementwise


def _softplus(x):
    return np.logaddexp(0, x)


CLOSED_FORMS = {
    "relu": lambda x: np.maximum(x, 0),
    "sigmoid": special.expit,
    "tanh": np.tanh,
    "gelu": lambda x: 0.5 * x * (1 + special.erf(x / math.sqrt(2))),
    "silu": lambda x: x * special.expit(x),
    "elu": lambda x: np.where(x > 0, x, np.expm1(np.minimum(x, 0))),
    "selu": lambda x: 1.0507009873554805 * np.where(x > 0, x, 1.6732632423543772 * np.expm1(np.minimum(x, 0))),
    "softplus": _softplus,
    "mish": lambda x: x * np.tanh(_softplus(x)),
    "hardswish": lambda x: x * np.clip(x + 3, 0, 6) / 6,
    "hardsigmoid": lambda x: np.clip(x / 6 + 0.5, 0, 1),
}
KINKS = [-3.0, 0.0, 3.0]  # where relu / elu / hard* bend: quad integrates each piece separately


def _gaussian_expectation(f):
    pieces = [-np.inf, *KINKS, np.inf]
    pdf = lambda x: math.exp(-x * x / 2) / math.sqrt(2 * math.pi)  # noqa: E731
    return sum(integrate.quad(lambda x: f(x) * pdf(x), a, b, epsabs=1e-13, epsrel=1e-13)[0]
               for a, b in zip(pieces, pieces[1:]))


@pytest.mark.parametrize("name", sorted(CLOSED_FORMS))
def test_constants_match_independent_quadrature(name):
    f = CLOSED_FORMS[name]
    mean = _gaussian_expectation(f)
    std = math.sqrt(_gaussian_expectation(lambda x: (f(x) - mean) ** 2))
    scale, bias = initlint.renorm_constants(name)
    assert scale == pytest.approx(1 / std, rel=1e-5)
    assert bias == pytest.approx(-mean / std, rel=1e-5, abs=1e-9)


def test_reference_values_from_the_design():
    """A handful of DESIGN.md's values, which themselves agree with scipy to 1e-6."""
    assert initlint.renorm_constants("relu") == pytest.approx((1.712859, -0.683332), abs=1e-6)
    assert initlint.renorm_constants("sigmoid") == pytest.approx((4.801313, -2.400657), abs=1e-6)


class GeneralReLU(nn.Module):
    """fastai's general ReLU: leaky, shifted down, clipped at a maximum."""

    def __init__(self, leak=0.1, sub=0.4, maxv=6.0):
        super().__init__()
        self.leak, self.sub, self.maxv = leak, sub, maxv

    def forward(self, x):
        return (torch.nn.functional.leaky_relu(x, self.leak) - self.sub).clamp(max=self.maxv)

    def extra_repr(self):
        return f"leak={self.leak}, sub={self.sub}, maxv={self.maxv}"


def test_custom_module_is_integrated_through_its_own_forward():
    leak, sub = 0.1, 0.4
    f = lambda x: np.minimum(np.where(x > 0, x, leak * x) - sub, 6.0)  # noqa: E731
    mean = _gaussian_expectation(f)
    std = math.sqrt(_gaussian_expectation(lambda x: (f(x) - mean) ** 2))
    assert initlint.renorm_constants(GeneralReLU(leak, sub)) == pytest.approx((1 / std, -mean / std), rel=1e-5)
    # a different configuration is a different cache entry
    assert initlint.renorm_constants(GeneralReLU(0.2, sub))[0] != pytest.approx(1 / std, rel=1e-3)


def test_a_module_with_a_float32_parameter_is_integrated_in_float64():
    """PReLU holds its slope as a float32 parameter, which takes no float64 input: it is
    integrated from a float64 copy, as the leaky ReLU with that slope."""
    slope = 0.1
    f = lambda x: np.where(x > 0, x, slope * x)  # noqa: E731
    mean = _gaussian_expectation(f)
    std = math.sqrt(_gaussian_expectation(lambda x: (f(x) - mean) ** 2))
    assert initlint.renorm_constants(nn.PReLU(init=slope)) == pytest.approx((1 / std, -mean / std), rel=1e-5)


@pytest.mark.parametrize("module", [nn.Softmax(dim=-1), nn.LayerNorm(8, elementwise_affine=False), nn.Linear(8, 8)])
def test_non_elementwise_modules_are_refused(module):
    assert not is_elementwise(module)
    with pytest.raises(InitlintError, match="not elementwise"):
        initlint.renorm_constants(module)


def test_unknown_name():
    with pytest.raises(InitlintError, match="unknown activation"):
        initlint.renorm_constants("swoosh")
