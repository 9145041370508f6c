"""Typed config dataclasses: every value read from YAML or a `key=value` override is checked against its field's
type and range before anything runs, with a one-line `ConfigError` naming the key.

A config is a plain dataclass; `option(default, ge=1, choices=...)` adds the range or choice list of a field.
Types understood: bool, int, float, str, None, unions of them (`float | str`, `int | None`), `list[...]`,
`dict[str, Any]`, `Any` and nested config dataclasses. An int is a valid float; a string that reads as a number
is a valid float (PyYAML reads `1e-3` as a string). One mechanism for every job: `video_adapt.config.Config`
(training), `video_adapt.pretraining.PretrainConfig`, and any other dataclass passed to `from_dict`.
"""
from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, Callable, Collection, Union

from video_adapt.errors import ConfigError

Choices = Union[Collection[Any], Callable[[], Collection[Any]]]


def option(default: Any = dataclasses.MISSING, *, factory: Callable[[], Any] | None = None,
           choices: Choices | None = None, ge: float | None = None, gt: float | None = None, le: float | None = None,
           lt: float | None = None, check: Callable[[Any], str | None] | None = None) -> Any:
    """A dataclass field with its allowed values. `choices` may be a function (a list kept elsewhere, read
    when checking); `choices` and `ge/gt/le/lt` apply to each element of a list; `check(value)` returns a problem
    or None."""
    rules = {k: v for k, v in dict(choices=choices, ge=ge, gt=gt, le=le, lt=lt, check=check).items() if v is not None}
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=rules)
    return dataclasses.field(default=default, metadata=rules)


class _Mismatch(Exception):
    pass


def type_name(tp: Any) -> str:
    """A type as a user reads it: `int`, `float or None`, `list of float`, `mapping`."""
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        return " or ".join(type_name(t) for t in typing.get_args(tp))
    if tp is type(None):
        return "None"
    if origin in (list, tuple):
        args = typing.get_args(tp)
        return f"list of {type_name(args[0])}" if args else "list"
    if origin is dict or tp is dict or dataclasses.is_dataclass(tp):
        return "mapping"
    if tp is Any:
        return "any value"
    return getattr(tp, "__name__", str(tp))


def _convert(value: Any, tp: Any) -> Any:
    """`value` as type `tp`, or _Mismatch. Only lossless readings: int -> float, numeric string -> float."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        for member in typing.get_args(tp):
            try:
                return _convert(value, member)
            except _Mismatch:
                continue
        raise _Mismatch
    if tp is type(None):
        if value is None:
            return None
        raise _Mismatch
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise _Mismatch
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise _Mismatch
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return value
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                raise _Mismatch from None
        raise _Mismatch
    if tp is str:
        if isinstance(value, str):
            return value
        raise _Mismatch
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise _Mismatch
        args = typing.get_args(tp)
        return [_convert(v, args[0]) for v in value] if args else list(value)
    if origin is dict or tp is dict:
        if isinstance(value, dict) and all(isinstance(k, str) for k in value):
            return value
        raise _Mismatch
    raise TypeError(f"config fields of type {tp!r} are not supported")  # a bug in a config class, not user input


def _numbers(value: Any) -> list[float]:
    items = value if isinstance(value, list) else [value]
    return [v for v in items if isinstance(v, (int, float)) and not isinstance(v, bool)]


def check_value(key: str, value: Any, tp: Any, rules: typing.Mapping[str, Any] | None = None) -> Any:
    """`value` for config key `key` of type `tp`, converted; ConfigError (one line, naming the key) otherwise."""
    try:
        value = _convert(value, tp)
    except _Mismatch:
        raise ConfigError(f"config key '{key}' expects {type_name(tp)}, got {value!r} "
                          f"({type(value).__name__})") from None
    rules = rules or {}
    if "choices" in rules and value is not None:
        choices = rules["choices"]() if callable(rules["choices"]) else rules["choices"]
        if any(v not in choices for v in (value if isinstance(value, list) else [value])):
            raise ConfigError(f"config value {key}={value!r} is not one of {', '.join(map(str, choices))}")
    bounds = [("ge", ">=", lambda v, b: v >= b), ("gt", ">", lambda v, b: v > b),
              ("le", "<=", lambda v, b: v <= b), ("lt", "<", lambda v, b: v < b)]
    for name, sign, holds in bounds:
        if name in rules and not all(holds(v, rules[name]) for v in _numbers(value)):
            raise ConfigError(f"config value {key}={value!r} must be {sign} {rules[name]}")
    if "check" in rules:
        problem = rules["check"](value)
        if problem:
            raise ConfigError(f"config value {key}={value!r} {problem}")
    return value


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def from_dict(cls: type, values: Any, prefix: str = "") -> Any:
    """Build config dataclass `cls` from a (nested) mapping; unknown keys and bad values fail naming the key."""
    if not isinstance(values, dict):
        raise ConfigError(f"config key '{prefix.rstrip('.')}' must be a mapping" if prefix
                          else f"a config must be a mapping, not {type(values).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = _hints(cls)
    required = [name for name, f in fields.items()
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    for name in required:
        if name not in values:
            raise ConfigError(f"config key '{prefix}{name}' is missing")
    kwargs = {}
    for key, value in values.items():
        if key not in fields:
            raise ConfigError(f"unknown config key '{prefix}{key}' (known: {', '.join(sorted(fields))})")
        tp = hints[key]
        if dataclasses.is_dataclass(tp):
            kwargs[key] = from_dict(tp, value or {}, f"{prefix}{key}.")
        else:
            kwargs[key] = check_value(f"{prefix}{key}", value, tp, fields[key].metadata)
    return cls(**kwargs)


def validate(obj: Any, prefix: str = "") -> Any:
    """Check every field of a config built in code (as `from_dict` checks what it reads); returns `obj`."""
    hints = _hints(type(obj))
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(hints[f.name]):
            validate(value, f"{prefix}{f.name}.")
        else:
            check_value(f"{prefix}{f.name}", value, hints[f.name], f.metadata)
    return obj
