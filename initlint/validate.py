"""One check per kind of setting, shared by the API, the CLI and ``[tool.initlint]``.

Each checker takes a raw value and returns it normalized, or raises ``Invalid`` with the
problem and its mend; the caller adds where the value came from (an API option, a flag, a key
in a named .toml file). A setting that would silently disable a rule (an empty selection, a
NaN threshold) or crash later (a seed beyond 64 bits, a batch of 0) is refused here.
"""

from __future__ import annotations

import math
import types
from collections.abc import Callable, Mapping
from typing import TypeVar

import torch.nn as nn

from initlint.errors import InitlintError

T = TypeVar("T")

MAX_SEED = 2**63 - 2
"""torch seeds are 64-bit; the probe's cotangents use ``seed + 1``."""


class Invalid(ValueError):
    """A setting's value is wrong: the message says what, and how to mend it."""


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def seed(value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_SEED:
        raise Invalid(f"{value!r} is not a seed; give an integer from 0 to {MAX_SEED}")
    return value


def batch_size(value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise Invalid(f"{value!r} is not a batch size; give a positive integer such as 8")
    return value


def input_shapes(value: object) -> list[tuple[int, ...]] | None:
    if value is None:
        return None
    if isinstance(value, (str, bytes)) or not _is_sequence(value) or not all(
        _is_sequence(shape) and len(shape) > 0
        and all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in shape)
        for shape in value
    ):
        raise Invalid(f"{value!r} is not a list of shapes of positive integers; give e.g. [(8, 3, 224, 224)]")
    return [tuple(shape) for shape in value]


def _is_sequence(value: object) -> bool:
    return isinstance(value, (list, tuple))


def codes(value: object, *, allow_empty: bool = True) -> list[str] | None:
    """Rule selectors: one string (``"IL101"`` or ``"IL101,IL2"``) or a list of them; each must
    name a rule. An empty selection runs no rule and would pass anything, so it is refused
    unless ``allow_empty`` (an empty ``ignore`` is fine)."""
    from initlint.selection import known_selector, split_codes

    if value is None:
        return None
    if isinstance(value, str):
        value = [value]
    if not _is_sequence(value) or not all(isinstance(v, str) for v in value):
        raise Invalid(f"{value!r} is not a list of rule codes; give e.g. [\"IL101\", \"IL5\"]")
    parts = split_codes(value)
    if not parts and not allow_empty:
        raise Invalid(f"{value!r} selects no rule, so nothing would be checked; give codes such as IL1, or ALL")
    for part in parts:
        known_selector(part)
    return parts


def threshold_value(rule_code: str, name: str, value: object) -> float:
    if not _is_number(value) or not math.isfinite(value) or value < 0:
        raise Invalid(f"{value!r} is not a threshold of {rule_code}; give a finite number >= 0")
    if name.endswith("band") and value < 1:
        raise Invalid(f"{value!r} is not a band of {rule_code}: a band is a ratio >= 1 (4.0 allows 4x either way)")
    if name.endswith("_cos") and value > 1:
        raise Invalid(f"{value!r} is not a cosine threshold of {rule_code}: a cosine is at most 1")
    return float(value)


def thresholds(value: object) -> dict[str, dict[str, float]]:
    """``{"IL101": {"band": 8.0}}``: known rules, their own threshold names, sane numbers."""
    from initlint.selection import known_selector

    if not isinstance(value, Mapping) or not all(isinstance(t, Mapping) for t in value.values()):
        raise Invalid(f"{value!r} is not a table of rule tables; give e.g. {{\"IL101\": {{\"band\": 8.0}}}}")
    checked: dict[str, dict[str, float]] = {}
    for code, table in value.items():
        rules = known_selector(code)
        for name, number in table.items():
            owners = [r for r in rules if name in r.thresholds]
            if not owners:
                known = sorted({t for r in rules for t in r.thresholds})
                raise Invalid(f"{code} has no threshold {name!r}; its thresholds are: {', '.join(known) or 'none'}")
            checked.setdefault(code, {})[name] = threshold_value(code, name, number)
    return checked


def per_module_ignores(value: object) -> dict[str, list[str]]:
    if not isinstance(value, Mapping) or not all(isinstance(glob, str) for glob in value):
        raise Invalid(f"{value!r} is not a table of module-path globs; give e.g. {{\"head.*\": [\"IL101\"]}}")
    return {glob: codes(listed) or [] for glob, listed in value.items()}


def _named(value: object) -> str:
    kind = "module" if isinstance(value, types.ModuleType) else type(value).__name__
    return f"{kind} {getattr(value, '__name__', repr(value))!r}"


def _all_of(value: object, fits: Callable[[object], bool], wanted: str, example: str) -> list:
    if not _is_sequence(value):
        raise Invalid(f"{value!r} is not a list of {wanted}; name them, e.g. [{example}]")
    for item in value:
        if not fits(item):
            raise Invalid(f"{_named(item)} is not one of the {wanted} this setting takes; name one, e.g. {example}")
    return list(value)


def module_classes(value: object) -> list[type[nn.Module]]:
    return _all_of(value, lambda c: isinstance(c, type) and issubclass(c, nn.Module),
                   "nn.Module classes", "mypkg.blocks.DynamicBlock")


def functions(value: object) -> list[Callable]:
    return _all_of(value, lambda f: callable(f) and not isinstance(f, type), "functions", "mypkg.ops.custom_op")


def checked(where: str, check: Callable[[object], T], value: object) -> T:
    """``check(value)``, with ``where`` (an option, a flag, a file and key) in the error."""
    try:
        return check(value)
    except Invalid as problem:
        raise InitlintError(f"{where}: {problem}.") from None
