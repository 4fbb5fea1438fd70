"""TOML in and out for ``weights.toml``: typed access to a parsed table, and TOML literals.

:class:`Table` reads one TOML table with one-line :class:`~liverctl.errors.ConfigError`
messages that name the file, the entry and the field; :func:`toml_value` writes the literal
of a value. :mod:`liverctl.weights.registry` uses both, so that a registry entry is read and
written by one schema.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

from liverctl.errors import ConfigError

__all__ = ["Table", "toml_key", "toml_value"]


class Table:
    """Typed access to one TOML table with errors that name the entry and the field."""

    def __init__(self, data: Mapping[str, Any], where: str) -> None:
        self.data = data
        self.where = where
        self.used: set[str] = set()

    def fail(self, key: str, message: str) -> ConfigError:
        return ConfigError(f"{self.where}.{key}: {message}")

    def get(self, key: str, kind: type | tuple[type, ...], default: Any = ..., *, what: str = "") -> Any:
        self.used.add(key)
        if key not in self.data:
            if default is ...:
                raise ConfigError(f"{self.where}: missing field '{key}'")
            return default
        value = self.data[key]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if isinstance(value, bool) and bool not in kinds:
            raise self.fail(key, f"must be {what or _kind_name(kinds)}, not {value!r}")
        if not isinstance(value, kinds):
            raise self.fail(key, f"must be {what or _kind_name(kinds)}, not {value!r}")
        return value

    def number(self, key: str, default: Any = ...) -> float:
        return float(self.get(key, (int, float), default, what="a number"))

    def numbers(self, key: str, n: int, kind: type = float, default: Any = ...) -> tuple | None:
        value = self.get(key, list, default, what=f"a list of {n} numbers")
        if value is None:
            return None
        kinds = (int,) if kind is int else (int, float)
        if len(value) != n or not all(isinstance(v, kinds) and not isinstance(v, bool) for v in value):
            raise self.fail(key, f"must be a list of {n} {'integers' if kind is int else 'numbers'}, not {value!r}")
        return tuple(kind(v) for v in value)

    def choice(self, key: str, choices: tuple[str, ...], default: Any = ...) -> str:
        value = self.get(key, str, default)
        if value not in choices:
            raise self.fail(key, f"must be one of {', '.join(choices)}, not {value!r}")
        return value

    def check_unknown(self) -> None:
        unknown = sorted(set(self.data) - self.used)
        if unknown:
            raise ConfigError(f"{self.where}: unknown field '{unknown[0]}'")


def _kind_name(kinds: tuple[type, ...]) -> str:
    names = {str: "a string", int: "an integer", float: "a number", list: "a list", dict: "a table", bool: "true/false"}
    return " or ".join(names.get(k, k.__name__) for k in kinds)


def toml_value(value: Any) -> str:
    """A TOML literal for a string, bool, number, list or mapping (inline table)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, Mapping):
        return "{ " + ", ".join(f"{toml_key(k)} = {toml_value(v)}" for k, v in value.items()) + " }"
    if isinstance(value, Sequence):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if value is None:
        return '""'
    raise TypeError(f"no TOML form for {type(value).__name__}")


def toml_key(key: str) -> str:
    """A TOML key: bare when it can be, quoted otherwise."""
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", str(key)) else json.dumps(str(key))
