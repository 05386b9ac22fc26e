"""User-facing errors: one message naming file, line and field; exit code 2."""

from __future__ import annotations

import typing
from typing import Any

import click
from pydantic import BaseModel, ValidationError


class UserError(click.ClickException):
    """An error the user can fix (bad input, bad params). Exits with code 2."""

    exit_code = 2

    def __init__(self, message: str, *, file: str | None = None, line: int | None = None,
                 field: str | None = None) -> None:
        where = ""
        if file is not None:
            where = str(file)
            if line is not None:
                where += f":{line}"
            where += ": "
        if field is not None:
            where += f"field '{field}': "
        super().__init__(where + message)
        self.file, self.line, self.field = file, line, field


class ParamsError(ValueError):
    """A broken cross-field rule, raised in a validator. `key` (dotted, relative to the model
    that raises) is the field to blame; `near` the key whose line to show when `key` is absent."""

    def __init__(self, key: str, message: str, near: str | None = None) -> None:
        super().__init__(message)
        self.key, self.near = key, near


TYPE_NAMES = {"string_type": "string", "int_type": "integer", "float_type": "number",
              "bool_type": "boolean", "list_type": "list", "dict_type": "a mapping",
              "model_type": "a mapping"}
BOUND_ERRORS = {"greater_than", "greater_than_equal", "less_than", "less_than_equal"}


def _data_path(loc: tuple, data: Any) -> tuple[list, Any]:
    """The part of a pydantic error location present in the input (union member tags and a
    missing key are not), and the first part that is not (None when all are)."""
    parts: list = []
    for part in loc:
        keys = {str(k): k for k in data} if isinstance(data, dict) else {}
        if str(part) in keys:
            data = data[keys[str(part)]]
        elif isinstance(data, list) and isinstance(part, int) and part < len(data):
            data = data[part]
        else:
            return parts, part
        parts.append(part if isinstance(part, int) else str(part))
    return parts, None


def _dotted(parts: list) -> str:
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in parts).lstrip(".")


def _field(model: type[BaseModel], parts: list) -> tuple[Any, Any]:
    """(type, FieldInfo) reached from `model` along `parts` (dict keys and list items skipped)."""
    tp, info = model, None
    for part in parts:
        fields = tp.model_fields if isinstance(tp, type) and issubclass(tp, BaseModel) else {}
        if part in fields:
            info = fields[part]
            tp = info.annotation
        elif typing.get_origin(tp) in (dict, list):
            tp = typing.get_args(tp)[-1]
    return tp, info


def _range(info: Any) -> str:
    """The allowed values of a bounded number field: `> 0`, `>= 1`, `in (0, 1]`, ..."""
    bounds = {k: getattr(m, k) for m in info.metadata for k in ("gt", "ge", "lt", "le")
              if hasattr(m, k)}
    low = f"({bounds['gt']}" if "gt" in bounds else f"[{bounds['ge']}" if "ge" in bounds else ""
    high = f"{bounds['lt']})" if "lt" in bounds else f"{bounds['le']}]" if "le" in bounds else ""
    if low and high:
        return f"in {low}, {high}"
    signs = {"gt": ">", "ge": ">=", "lt": "<", "le": "<="}
    return " and ".join(f"{signs[k]} {v}" for k, v in bounds.items())


def from_validation_error(exc: ValidationError, model: type[BaseModel], data: dict, file: str,
                          lines: dict[str, int]) -> UserError:
    """The first error of `model.model_validate(data)` as one UserError: file, line, key.

    The line is the key's, else (a missing key) its section's; `lines` maps dotted keys to lines.
    """
    errors = exc.errors()
    first, near = errors[0], None
    parts, rest = _data_path(first["loc"], data)
    kind, value = first["type"], first["input"]
    cause = (first.get("ctx") or {}).get("error")
    if kind == "missing":
        message = f"incomplete section: missing key '{rest}'"
    elif kind == "extra_forbidden":
        known = sorted(_field(model, parts[:-1])[0].model_fields)
        message = f"unknown key (known: {', '.join(known)})"
    elif kind in BOUND_ERRORS:
        info = _field(model, parts)[1]
        message = f"must be {_range(info)}, got {value!r}"
        if info.description:  # says what the number is, and often why the bound
            message += f"; {info.description}"
    elif isinstance(cause, ParamsError):
        parts, near, message = parts + cause.key.split("."), cause.near, str(cause)
    elif kind == "value_error":
        message = str(cause)
    elif kind == "finite_number":
        message = f"must be a finite number, got {value!r}"
    elif kind == "literal_error":
        expected = first["ctx"]["expected"].replace(" or ", ", ")
        message = f"expected one of {expected}, got {value!r}"
    elif kind in TYPE_NAMES:  # a union tries each member: `expected string or list`
        names = [TYPE_NAMES[e["type"]] for e in errors if e["type"] in TYPE_NAMES
                 and _data_path(e["loc"], data)[0] == parts]
        message = (f"expected {' or '.join(dict.fromkeys(names))}, "
                   f"got {type(value).__name__} ({value!r})")
    else:
        message = first["msg"]
    key = _dotted(parts)
    candidates = [key, near] + [_dotted(parts[:i]) for i in range(len(parts) - 1, 0, -1)]
    line = next((lines[k] for k in candidates if k in lines), None)
    return UserError(message, file=file, line=line, field=key or None)
