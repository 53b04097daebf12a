"""Loading targets: file and module factories, and every way that fails (exit 2, a clear message)."""

from __future__ import annotations

import sys

from torch import nn

from initlint.load import load_target


def test_file_target_with_sibling_import(model_file):
    model_file("WIDTH = 5\n", name="settings.py")
    path = model_file(
        """
        import torch.nn as nn
        from settings import WIDTH

        def build():
            return nn.Linear(WIDTH, 2)
        """
    )
    loaded = load_target(f"{path}:build")
    assert isinstance(loaded.model, nn.Linear) and loaded.model.in_features == 5
    assert str(path.parent) not in sys.path  # the folder is only on sys.path while loading
    assert loaded.factory_location.file == str(path) and loaded.factory_location.line == 5


def test_module_target(model_file, monkeypatch):
    path = model_file("import torch.nn as nn\nclass Net(nn.Sequential):\n    pass\n", name="mypkg_models.py")
    monkeypatch.syspath_prepend(str(path.parent))
    assert isinstance(load_target("mypkg_models:Net").model, nn.Sequential)


def test_construction_sites_point_at_the_users_lines(model_file):
    path = model_file(
        """
        import torch.nn as nn

        def build():
            return nn.Sequential(
                nn.Linear(4, 4),
                nn.ReLU(),
            )
        """
    )
    loaded = load_target(f"{path}:build")
    sites = {type(m).__name__: s.line for m, s in loaded.construction_sites.items()}
    assert sites["Linear"] == sites["ReLU"] == 5  # the line of the nn.Sequential( call
