"""Typed values from untyped sources (YAML, JSON, form fields, command lines), with errors that say where.

    coerce(" 3 ", int)                         -> 3
    from_mapping(ProjectSettings, data, "p/project.json", "settings")

One place decides what "a number" or "yes" means, for project settings, model cards and the options
of mitigations and auto-labelers alike.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any

_TRUE = ("true", "1", "yes", "on")
_FALSE = ("false", "0", "no", "off")


class TypedValueError(ValueError):
    """A value that does not fit its declared type; the message names the source and the key."""


def coerce(value: Any, kind: type) -> Any:
    """`value` as `kind` (bool, int, float or str); ValueError when it is not one.

    Strings are parsed ("3", "0.5", "yes"); an int is not taken from a float with a fraction, nor a
    number from a bool (True is not 1 in a form); other kinds are returned unchanged.
    """
    if kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in _TRUE + _FALSE:
            return value.strip().lower() in _TRUE
        if isinstance(value, (int, float)) and value in (0, 1):
            return bool(value)
        raise ValueError(f"not a yes/no value: {value!r}")
    if kind in (list, dict, tuple):
        if not isinstance(value, kind):
            raise ValueError(f"not a {kind.__name__}: {value!r}")
        return value
    if kind in (int, float) and isinstance(value, bool):
        raise ValueError(f"not a number: {value!r}")
    if kind is int:
        if isinstance(value, str):
            value = float(value.strip()) if any(c in value for c in ".eE") else int(value.strip())
        if isinstance(value, float) and not value.is_integer():
            raise ValueError(f"not a whole number: {value!r}")
        return int(value)
    if kind is float:
        return float(value.strip() if isinstance(value, str) else value)
    if kind is str:
        if isinstance(value, (list, tuple, dict, set)) or value is None:
            raise ValueError(f"not text: {value!r}")  # dates and numbers read from YAML are fine
        return str(value)
    return value


def _field_kind(hint: Any) -> type | None:
    """The scalar type of a field hint (`int`, `str | None` -> str), None for containers and others."""
    if hint in (bool, int, float, str):
        return hint
    if typing.get_origin(hint) not in (typing.Union, types.UnionType):
        return None
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if len(args) == 1 and args[0] in (bool, int, float, str):
        return args[0]
    return None


def _container(hint: Any) -> type | None:
    origin = typing.get_origin(hint) or hint
    return origin if origin in (list, dict) else None


def from_mapping(cls: type, data: Any, source: str, what: str = "") -> Any:
    """An instance of dataclass `cls` from a mapping, checking every key and value.

    Unknown keys and values of the wrong type raise TypedValueError naming `source` (a file) and the key;
    missing keys take the dataclass's defaults (a missing key without a default is an error too).
    `what` prefixes the key in messages (e.g. "settings").
    """
    prefix = f"{what}." if what else ""
    if not isinstance(data, dict):
        raise TypedValueError(f"{source}: {what or 'the file'} must be a mapping of keys to values, "
                              f"not {type(data).__name__}.")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise TypedValueError(f"{source}: unknown key '{prefix}{unknown[0]}' (known: {', '.join(fields)}). "
                              "Remove it, or check its spelling.")
    hints = typing.get_type_hints(cls)
    values = {}
    for name, value in data.items():
        hint = hints.get(name)
        kind, container = _field_kind(hint), _container(hint)
        try:
            if value is None and type(None) in typing.get_args(hint):
                values[name] = None
            elif kind is not None:
                values[name] = coerce(value, kind)
            elif container is not None and not isinstance(value, container):
                raise ValueError(f"not a {container.__name__}: {value!r}")
            else:
                values[name] = value  # containers and free-form values are taken as they are
        except (TypeError, ValueError) as err:
            raise TypedValueError(f"{source}: '{prefix}{name}' has a wrong value ({err}).") from None
    missing = [f.name for f in fields.values() if f.name not in values
               and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if missing:
        raise TypedValueError(f"{source}: lacks {', '.join(prefix + m for m in missing)}.")
    return cls(**values)
