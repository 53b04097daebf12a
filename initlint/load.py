"""Turn a TARGET string into a freshly built ``nn.Module``.

``path/to/file.py:factory`` imports the file with its folder on ``sys.path`` (so sibling imports
work); ``package.module:factory`` imports a module. The factory is any callable that needs no
arguments and returns an ``nn.Module``. Every failure becomes an ``InitlintError`` that says
what went wrong and how to mend it.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import importlib.util
import inspect
import itertools
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

import torch
import torch.nn as nn

from initlint.errors import InitlintError
from initlint.names import checked_path
from initlint.user_code import exits_refused
from initlint.locations import (
    SourceLocation,
    definition_of,
    recording_construction_sites,
)

_unique = itertools.count()


@dataclass
class PlannedInputs:
    """Inputs as ``--input-shape`` (positional, in order) and ``--input`` (by name) give them."""

    shapes: list[tuple[int, ...]]
    named: dict[str, str]


@dataclass
class LoadedTarget:
    target: str
    model: nn.Module
    construction_sites: dict[nn.Module, SourceLocation]
    factory_location: SourceLocation | None
    module: ModuleType | None = None
    """The module the factory was found in (a file target's is imported under a private name)."""
    source_file: Path | None = None
    """The file of a ``path/to/file.py:factory`` target."""
    planned: PlannedInputs = field(default_factory=lambda: PlannedInputs([], {}))
    """For a folder ``fix`` wrote: the inputs it was planned with. The constants were chosen
    at those shapes, and a model captured by export has them written into its code."""


def split_target(target: str) -> tuple[str, str]:
    source, sep, factory = target.rpartition(":")
    if not sep or not source or not factory.isidentifier():
        raise InitlintError(
            f"target {target!r} is not of the form 'path/to/file.py:factory' or "
            "'package.module:factory'; name the callable that builds your model after a colon."
        )
    return source, factory


def is_file_source(source: str) -> bool:
    return source.endswith(".py") or "/" in source or "\\" in source


@contextlib.contextmanager
def _on_sys_path(folder: str) -> Iterator[None]:
    sys.path.insert(0, folder)
    try:
        yield
    finally:
        with contextlib.suppress(ValueError):
            sys.path.remove(folder)


def _import_file(path: Path) -> ModuleType:
    if not path.exists():
        raise InitlintError(
            f"no such file or folder: {str(path)!r} (the model file before the colon in TARGET, relative "
            "to the current folder); check the path."
        )
    if not path.is_file():
        raise InitlintError(f"{str(path)!r} is a folder, not a model file; give path/to/file.py:factory.")
    name = f"initlint_target_{next(_unique)}_{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise InitlintError(f"{str(path)!r} cannot be imported as Python; give a .py file.")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        with exits_refused(f"the model file {str(path)!r}, while it was imported,",
                           'a model file must import without exiting: put its script part under '
                           '`if __name__ == "__main__":`.'):
            spec.loader.exec_module(module)
    except SyntaxError as error:
        raise InitlintError(
            f"{error.filename}:{error.lineno}: syntax error in the model file: {error.msg}; "
            "fix the file so that `python` can import it."
        ) from error
    except InitlintError:
        raise
    except Exception as error:
        raise InitlintError(
            f"importing {str(path)!r} raised {type(error).__name__}: {error}; "
            "the file must import cleanly on its own (run `python` on it to see the traceback)."
        ) from error
    return module


def _import_module(name: str) -> ModuleType:
    try:
        with exits_refused(f"module {name!r}, while it was imported,",
                           "a model module must import without exiting."):
            return importlib.import_module(name)
    except ModuleNotFoundError as error:
        raise InitlintError(
            f"cannot import module {name!r} ({error}); install the package or give a "
            "file path such as 'path/to/model.py:build' instead."
        ) from error
    except InitlintError:
        raise
    except Exception as error:
        raise InitlintError(
            f"importing module {name!r} raised {type(error).__name__}: {error}; "
            "it must import cleanly on its own."
        ) from error


def _factory_from(module: ModuleType, name: str, where: str) -> Callable[[], object]:
    factory = getattr(module, name, None)
    if factory is None:
        candidates = sorted(
            attr for attr, value in vars(module).items()
            if callable(value) and not attr.startswith("_")
            and getattr(value, "__module__", None) == module.__name__
        )
        hint = (f" Callables defined there: {', '.join(candidates)}." if candidates
                else " It defines no callables: write a function that returns the model.")
        raise InitlintError(f"{where} has no attribute {name!r}; name the factory after the colon.{hint}")
    if not callable(factory):
        raise InitlintError(
            f"{where}:{name} is a {type(factory).__name__}, not a callable; name a function "
            "or class that builds the model."
        )
    try:
        inspect.signature(factory).bind()
    except TypeError as error:
        raise InitlintError(
            f"{where}:{name} cannot be called without arguments ({error}); give every "
            "parameter a default, or wrap it in a function that takes none."
        ) from None
    except ValueError:
        pass  # no signature (a builtin); calling it will tell
    return factory


def _fix_folder_target(folder: Path) -> str:
    from initlint.export import CODE_FILE, FOLDED_FILE, PLAN_FILE  # the layout `initlint fix` writes

    if (folder / FOLDED_FILE).is_file() and not (folder / CODE_FILE).exists():
        raise InitlintError(
            f"{str(folder)!r} holds only folded weights ({FOLDED_FILE}: fix could not write code for this "
            f"model); load them into your model, model.load_state_dict(torch.load('{FOLDED_FILE}', "
            "weights_only=True)), and check the factory that builds it."
        )
    if not ((folder / CODE_FILE).is_file() and (folder / PLAN_FILE).is_file()):
        raise InitlintError(
            f"{str(folder)!r} is a folder but not one written by `initlint fix` (it lacks "
            f"{CODE_FILE} or {PLAN_FILE}); give path/to/file.py:factory instead."
        )
    return f"{folder / CODE_FILE}:build"


def _planned_inputs(folder: Path) -> PlannedInputs:
    from initlint.export import PLAN_FILE

    try:
        plan = json.loads((folder / PLAN_FILE).read_text(encoding="utf-8"))
        specs = [spec for spec in plan["inputs"] if isinstance(spec, dict)]
        # a positional input that is not float (a diffusion UNet's integer timestep) goes by
        # name with its dtype, and then every input does: shapes alone would be drawn as floats
        positional_not_float = any(not spec.get("keyword") and spec["dtype"] != "float" for spec in specs)
        by_name = specs if positional_not_float else [spec for spec in specs if spec.get("keyword")]
        return PlannedInputs(
            [tuple(spec["shape"]) for spec in specs if spec not in by_name],
            {spec["name"]: ",".join(map(str, spec["shape"])) + ("" if spec["dtype"] == "float" else f":{spec['dtype']}")
             for spec in by_name},
        )
    except (OSError, ValueError, KeyError, TypeError):
        return PlannedInputs([], {})


def load_target(target: str, seed: int = 0) -> LoadedTarget:
    """Import the factory named by ``target``, call it with torch's RNG seeded by ``seed`` (a
    factory that draws its weights without seeding gives the same model, hence the same report,
    on every run: a linter in CI must not flip on a draw), and record where its layers are built.
    A folder written by ``initlint fix`` stands for its generated ``model.py:build``."""
    source = target.rpartition(":")[0] if ":" in target else target
    checked_path(source, "the model file or folder")
    if Path(target).is_dir():
        loaded = load_target(_fix_folder_target(Path(target)), seed)
        loaded.target = target
        loaded.planned = _planned_inputs(Path(target))
        return loaded
    if ":" not in target:
        raise _not_a_target(target)
    source, name = split_target(target)
    if is_file_source(source):
        path = Path(source)
        with _on_sys_path(str(path.resolve().parent)):
            module = _import_file(path)
            factory = _factory_from(module, name, source)
            model, sites = _build(factory, target, seed)
        return LoadedTarget(target, model, sites, definition_of(factory), module, path)
    module = _import_module(source)
    factory = _factory_from(module, name, source)
    model, sites = _build(factory, target, seed)
    return LoadedTarget(target, model, sites, definition_of(factory), module)


def _not_a_target(target: str) -> InitlintError:
    """Why a TARGET without a factory cannot be checked: it is missing, or a file that needs one."""
    path = Path(target)
    if path.is_file():
        return InitlintError(f"{target!r} is a file; name the callable in it that builds the model after a colon: "
                             f"'{target}:build'.")
    return InitlintError(
        f"no such file or folder: {target!r}; TARGET is path/to/file.py:factory, package.module:factory, "
        "or a folder written by `initlint fix`."
    )


def resolve_name(name: str, loaded: LoadedTarget | None = None) -> object:
    """The object named ``module.attribute``. Beside a file target, ``module`` may be the target
    file itself (by its file name: ``model.Block`` for ``model.py``, the very class the factory
    used) or a module in its folder. Raises ImportError, AttributeError or ValueError."""
    module_name, _, attribute = name.rpartition(".")
    if not module_name or not attribute:
        raise ValueError("not of the form module.QualifiedName")
    source = loaded.source_file if loaded is not None else None
    if source is not None and module_name == source.stem and loaded.module is not None:
        return getattr(loaded.module, attribute)
    with _on_sys_path(str(source.resolve().parent)) if source is not None else contextlib.nullcontext():
        return getattr(importlib.import_module(module_name), attribute)


def _build(factory: Callable[[], object], target: str, seed: int) -> tuple[nn.Module, dict]:
    with recording_construction_sites() as sites, torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        try:
            with exits_refused(f"the factory {target}", "a factory must return the model, not exit."):
                model = factory()
        except InitlintError:
            raise
        except Exception as error:
            raise InitlintError(
                f"the factory {target} raised {type(error).__name__}: {error}; "
                "it must build the model without errors when called with no arguments."
            ) from error
    if not isinstance(model, nn.Module):
        raise InitlintError(
            f"the factory {target} returned {_describe(model)}, not a torch.nn.Module; "
            "return the model itself."
        )
    return model, sites


def _describe(value: object) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text if len(text) <= 40 else text[:37] + '...'}"
