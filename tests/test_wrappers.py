"""Models handed over inside a runtime wrapper (DataParallel, torch.compile) are probed as the
model inside; a TorchScript module is refused with what to pass instead."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import initlint
from initlint.errors import InitlintError


def _tanh_mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(16, 32), nn.Tanh(), nn.Linear(32, 32), nn.Tanh(), nn.Linear(32, 4))


WRAPPERS = {"DataParallel": nn.DataParallel, "torch.compile": torch.compile}


@pytest.mark.parametrize("wrap", WRAPPERS.values(), ids=WRAPPERS.keys())
def test_a_wrapped_model_is_checked_and_fixed_as_the_model_inside(wrap):
    """The same graph and findings as the bare model (before: "the model takes 0 input(s)",
    exit 2), and a note that says which model was probed."""
    bare = initlint.check(_tanh_mlp(), input_shapes=[(8, 16)])
    wrapped = initlint.check(wrap(_tanh_mlp()), input_shapes=[(8, 16)])
    assert wrapped.trace_mode == "fx" and "adds no layers" in wrapped.trace_note
    assert [f.code for f in wrapped.findings] == [f.code for f in bare.findings]
    assert len(wrapped.graph.nodes) == len(bare.graph.nodes)
    x = torch.randn(4, 16)
    fixed, fixed_bare = (initlint.fix(m, input_shapes=[(64, 16)]) for m in (wrap(_tanh_mlp()), _tanh_mlp()))
    torch.testing.assert_close(fixed(x), fixed_bare(x))


@pytest.mark.filterwarnings("ignore:`torch.jit.trace.*` is deprecated:FutureWarning")
def test_a_torchscript_module_is_refused_with_what_to_pass():
    scripted = torch.jit.trace(_tanh_mlp(), torch.randn(2, 16))
    with pytest.raises(InitlintError, match="TorchScript module.*pass the nn.Module before scripting"):
        initlint.check(scripted, input_shapes=[(8, 16)])
