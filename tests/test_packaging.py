"""A built wheel ships the rules as initlint.rules and never as a top-level `rules` package."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_wheel_contains_rules_inside_initlint(tmp_path):
    subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--outdir", str(tmp_path), str(ROOT)],
        check=True, capture_output=True,
    )
    (wheel,) = tmp_path.glob("initlint-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    rule_files = {p.name for p in (ROOT / "rules").glob("*.py")}
    assert rule_files and rule_files <= {Path(n).name for n in names if n.startswith("initlint/rules/")}
    assert not any(n.startswith("rules/") for n in names)
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "initlint = initlint.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()
