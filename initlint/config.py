"""``[tool.initlint]`` in the nearest pyproject.toml (or ``--config PATH``): defaults for the CLI.

Keys use kebab-case, as in ruff. The command line overrides the file; an unknown key or a bad
value is an error that names the key and the file. Relative target paths are relative to the
file's folder, so the same config works from any working folder (and in pre-commit).
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from initlint.choices import DEVICES, OUTPUT_FORMATS, SEVERITIES
from initlint import validate
from initlint.errors import InitlintError
from initlint.inputs import parse_named_input
from initlint.load import LoadedTarget, is_file_source, resolve_name
from initlint.locations import relative_to_cwd
from initlint.names import checked_path
from initlint.user_code import exits_refused

T = TypeVar("T")

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib



@dataclass
class TargetConfig:
    target: str
    input_shapes: list[tuple[int, ...]] = field(default_factory=list)
    inputs: dict[str, str] = field(default_factory=dict)
    """Inputs by name: ``{"input_ids": "8,32:int64"}``, as ``--input`` takes them."""


@dataclass
class Config:
    path: Path | None = None
    targets: list[TargetConfig] = field(default_factory=list)
    select: list[str] | None = None
    extend_select: list[str] = field(default_factory=list)
    ignore: list[str] = field(default_factory=list)
    per_module_ignores: dict[str, list[str]] = field(default_factory=dict)
    fail_level: str | None = None
    output_format: str | None = None
    device: str | None = None
    seed: int | None = None
    rules: dict[str, dict[str, float]] = field(default_factory=dict)
    leaf_modules: list[str] = field(default_factory=list)
    """Names, resolved beside each target by ``imports_for`` (a class of the target file too)."""
    wrap_functions: list[str] = field(default_factory=list)
    require_graph: bool | None = None

    def imports_for(self, loaded: LoadedTarget | None) -> tuple[list[type], list[Callable]]:
        """``leaf-modules`` and ``wrap-functions`` resolved beside ``loaded``'s file."""
        where = f"{self.path}: [tool.initlint]"
        leaves = self._resolved("leaf-modules", self.leaf_modules, loaded)
        functions = self._resolved("wrap-functions", self.wrap_functions, loaded)
        return validate.checked(f"{where} leaf-modules", validate.module_classes, leaves), \
            validate.checked(f"{where} wrap-functions", validate.functions, functions)

    def _resolved(self, key: str, names: list[str], loaded: LoadedTarget | None) -> list:
        found = []
        for name in names:
            try:
                with exits_refused(f"importing {name!r}", "a module named in the config must import without exiting."):
                    found.append(resolve_name(name, loaded))
            except (ImportError, AttributeError, ValueError) as error:
                beside = f" or beside {loaded.source_file}" if loaded is not None and loaded.source_file else ""
                raise InitlintError(
                    f"{self.path}: [tool.initlint] {key}: cannot import {name!r} ({error}); give "
                    f"module.QualifiedName, importable from the environment{beside} (the target "
                    "file itself is the module named by its file name, e.g. model.Block for model.py)"
                ) from None
        return found


def find_pyproject(start: Path) -> Path | None:
    """The nearest pyproject.toml at or above ``start``."""
    for folder in (start, *start.parents):
        if (folder / "pyproject.toml").is_file():
            return folder / "pyproject.toml"
    return None


class _Reader:
    """Validates one [tool.initlint] table, naming the key and the file in every error."""

    def __init__(self, path: Path, table: dict) -> None:
        self.path, self.table = path, table

    def fail(self, key: str, problem: str) -> InitlintError:
        return InitlintError(f"{self.path}: [tool.initlint] {key}: {problem}")

    def strings(self, key: str) -> list[str] | None:
        value = self.table.get(key)
        if value is None:
            return None
        if not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
            raise self.fail(key, "must be a list of strings, e.g. [\"IL101\", \"IL5\"]")
        return value

    def choice(self, key: str, choices: tuple[str, ...]) -> str | None:
        value = self.table.get(key)
        if value is not None and value not in choices:
            raise self.fail(key, f"{value!r} is not one of {', '.join(choices)}")
        return value

    def target(self, index: int, entry: object) -> TargetConfig:
        key = f"targets[{index}]"
        if isinstance(entry, str):
            return TargetConfig(self.relative(entry))
        if not isinstance(entry, dict) or not isinstance(entry.get("target"), str):
            raise self.fail(key, "must be a TARGET string or a table with a 'target' string")
        unknown = set(entry) - {"target", "input-shapes", "inputs"}
        if unknown:
            raise self.fail(key, f"unknown key(s) {', '.join(sorted(unknown))}; use target, input-shapes, inputs")
        shapes = entry.get("input-shapes", [])
        if not (isinstance(shapes, list) and all(
            isinstance(s, list) and s and all(isinstance(d, int) and d > 0 for d in s) for s in shapes
        )):
            raise self.fail(key, "input-shapes must be a list of shapes such as [[8, 3, 224, 224]]")
        return TargetConfig(self.relative(entry["target"]), [tuple(s) for s in shapes], self.inputs(key, entry))

    def inputs(self, key: str, entry: dict) -> dict[str, str]:
        """``inputs = {input_ids = "8,32:int64"}``, checked as ``--input`` checks it."""
        inputs = entry.get("inputs", {})
        if not (isinstance(inputs, dict) and all(isinstance(v, str) for v in inputs.values())):
            raise self.fail(key, 'inputs must be a table of NAME = "SHAPE:DTYPE", e.g. {input_ids = "8,32:int64"}')
        for name, text in inputs.items():
            try:
                parse_named_input(name, text)
            except InitlintError as error:
                raise self.fail(f"{key}.inputs", str(error).replace("--input NAME=SHAPE:DTYPE", 'NAME = "SHAPE:DTYPE"')) from None
        return dict(inputs)

    def relative(self, target: str) -> str:
        """A relative file or folder target is relative to the config's folder; it is named
        relative to the working folder when inside it, as findings name files."""
        source, sep, factory = target.rpartition(":")
        if not sep:
            source = target  # a folder written by `initlint fix`
        elif not is_file_source(source):
            return target  # package.module:factory
        if Path(source).is_absolute():
            return target
        resolved = str(relative_to_cwd(self.path.parent.absolute() / source))
        return f"{resolved}:{factory}" if sep else resolved

    def thresholds(self) -> dict[str, dict[str, float]]:
        rules = self.table.get("rules", {})
        if not isinstance(rules, dict):
            raise self.fail("rules", "must be a table of rule tables, e.g. [tool.initlint.rules.IL101]")
        for code, values in rules.items():
            if not isinstance(values, dict):
                raise self.fail(f"rules.{code}", "must be a table of numbers, e.g. band = 8.0")
            self.valid(f"rules.{code}", validate.thresholds, {code: {}})
            for name, value in values.items():
                self.valid(f"rules.{code}.{name}", validate.thresholds, {code: {name: value}})
        return {code: dict(values) for code, values in rules.items()}

    def flag(self, key: str) -> bool | None:
        value = self.table.get(key)
        if value is not None and not isinstance(value, bool):
            raise self.fail(key, "must be true or false")
        return value

    def valid(self, key: str, check: Callable[[object], T], value: object) -> T:
        """``check(value)``; its complaint names this file and ``key``."""
        try:
            return check(value)
        except validate.Invalid as problem:
            raise self.fail(key, str(problem)) from None

    def codes(self, key: str, allow_empty: bool = True) -> list[str] | None:
        value = self.strings(key)
        return self.valid(key, functools.partial(validate.codes, allow_empty=allow_empty), value)


KEYS = (
    "targets", "select", "extend-select", "ignore", "per-module-ignores", "fail-level",
    "output-format", "device", "seed", "rules", "leaf-modules", "wrap-functions", "require-graph",
)


def load_config(explicit: str | None = None, start: Path | None = None) -> Config:
    """Read ``explicit`` or the nearest pyproject.toml; no file or no table gives the defaults."""
    path = checked_path(explicit, "the config file") if explicit else find_pyproject(start or Path.cwd())
    if path is None:
        return Config()
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InitlintError(f"config file {str(path)!r} does not exist; check --config.") from None
    except UnicodeDecodeError as error:
        raise InitlintError(f"cannot read {path}: it is not UTF-8 ({error.reason} at byte {error.start}); "
                            "save it as UTF-8, as TOML requires.") from None
    except (OSError, tomllib.TOMLDecodeError) as error:
        raise InitlintError(f"cannot read {path}: {error}; fix the TOML.") from None
    tool = document.get("tool", {})
    if not isinstance(tool, dict):
        raise InitlintError(f"{path}: tool must be a table ([tool.initlint] goes under it), not {tool!r}.")
    table = tool.get("initlint")
    if table is None:
        return Config(path=path)
    if not isinstance(table, dict):
        raise InitlintError(f"{path}: tool.initlint must be a table ([tool.initlint] with keys under it), not {table!r}.")
    reader = _Reader(path, table)
    unknown = sorted(set(table) - set(KEYS))
    if unknown:
        raise reader.fail(unknown[0], f"unknown key; the keys are: {', '.join(KEYS)}")
    targets = table.get("targets", [])
    if not isinstance(targets, list):
        raise reader.fail("targets", "must be a list of TARGET strings or tables")
    ignores = table.get("per-module-ignores", {})
    if not isinstance(ignores, dict) or not all(
        isinstance(v, list) and all(isinstance(c, str) for c in v) for v in ignores.values()
    ):
        raise reader.fail("per-module-ignores", 'must map module-path globs to code lists, e.g. "head.*" = ["IL101"]')
    for glob, codes in ignores.items():
        reader.valid(f"per-module-ignores.{glob!r}", validate.codes, codes)
    seed = table.get("seed")
    if seed is not None:
        reader.valid("seed", validate.seed, seed)
    return Config(
        path=path,
        targets=[reader.target(i, t) for i, t in enumerate(targets)],
        select=reader.codes("select", allow_empty=False),
        extend_select=reader.codes("extend-select") or [],
        ignore=reader.codes("ignore") or [],
        per_module_ignores={glob: list(codes) for glob, codes in ignores.items()},
        fail_level=reader.choice("fail-level", SEVERITIES),
        output_format=reader.choice("output-format", OUTPUT_FORMATS),
        device=reader.choice("device", DEVICES),
        seed=seed,
        rules=reader.thresholds(),
        leaf_modules=reader.strings("leaf-modules") or [],
        wrap_functions=reader.strings("wrap-functions") or [],
        require_graph=reader.flag("require-graph"),
    )
