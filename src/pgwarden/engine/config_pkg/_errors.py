"""Problems with ``pgwarden.yaml``: the error types and the house format of their messages.

pydantic's errors are turned into :class:`ConfigProblem` lines of the form
``<key path>: <what was expected> (got <value>)``. Values that may be secrets (a
``password`` or ``key`` field, a DSN's password, an unknown key's value) are
never repeated back.
"""

from __future__ import annotations

import difflib
import re
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import BaseModel
from pydantic_core import ErrorDetails, ErrorType, InitErrorDetails, PydanticCustomError

# -- errors -----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ConfigProblem:
    """One thing wrong with the file: where (a key path such as ``rules[0].target``) and what."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class ConfigError(Exception):
    """The configuration cannot be used. ``problems`` lists every problem found, in file order.

    ``code`` is stable: ``config_invalid`` (the content is wrong), ``config_syntax`` (not
    valid YAML) or ``config_unreadable`` (the file could not be read).
    """

    def __init__(self, source: str, problems: list[ConfigProblem], code: str = "config_invalid") -> None:
        self.source = source
        self.problems = problems
        self.code = code
        count = f"{len(problems)} problem" + ("" if len(problems) == 1 else "s")
        lines = "\n".join(f"  {p}" for p in problems)
        super().__init__(f"{source}: {count}:\n{lines}")


def fail(expected: str, got: str) -> PydanticCustomError:
    # The message is already in the house format; problem_from_error() passes it through untouched.
    return PydanticCustomError("pgwarden", "{detail}", {"detail": f"{expected} (got {got})"})


_BUILTIN_ERROR_TYPES = frozenset(typing.get_args(ErrorType))


def as_details(error: ErrorDetails) -> InitErrorDetails:
    # Re-raising needs error types pydantic knows; ours ("pgwarden") are rebuilt as custom errors.
    if error["type"] in _BUILTIN_ERROR_TYPES:
        return error  # type: ignore[return-value]
    kind = PydanticCustomError(error["type"], "{detail}", {"detail": error["msg"]})
    return InitErrorDetails(type=kind, loc=error["loc"], input=error["input"])


def redact_dsn(dsn: str) -> str:
    dsn = re.sub(r"(://[^:/@?#]*):[^@/?#]*@", r"\1:***@", dsn)
    dsn = re.sub(r"([?&]password=)[^&#]*", r"\1***", dsn, flags=re.IGNORECASE)
    return re.sub(r"(\bpassword\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", r"\1***", dsn, flags=re.IGNORECASE)



# -- turning pydantic errors into problems ----------------------------------------------------------


def show(value: object, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


_PLAIN_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")


def _format_path(loc: Iterable[int | str]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part == "[key]":
            out += " (key)"
        elif _PLAIN_KEY.match(part):
            out += f".{part}" if out else part
        else:
            out += f"[{part!r}]"
    return out


def _unwrap(tp: Any) -> Any:
    """The model class a field annotation leads to, through Optional / Annotated."""
    while True:
        origin = typing.get_origin(tp)
        if origin is Annotated:
            tp = typing.get_args(tp)[0]
        elif origin in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(tp) if a is not type(None)]
            if len(args) != 1:
                return tp
            tp = args[0]
        else:
            return tp


def _keys_at(root: type[BaseModel], loc: tuple[int | str, ...]) -> list[str]:
    """Keys the model at ``loc`` accepts (best effort; [] when it cannot tell)."""
    tp: Any = root
    for part in loc:
        tp = _unwrap(tp)
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            field = tp.model_fields.get(str(part))
            if field is None:
                return []
            tp = field.annotation
            continue
        origin = typing.get_origin(tp)
        if origin is list and isinstance(part, int):
            tp = typing.get_args(tp)[0]
        elif origin is dict:
            tp = typing.get_args(tp)[1]
        else:
            return []
    tp = _unwrap(tp)
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return list(tp.model_fields)
    return []


_EXPECTED_BY_TYPE = {
    "string_type": "expected a string",
    "int_type": "expected a whole number",
    "int_parsing": "expected a whole number",
    "int_from_float": "expected a whole number",
    "float_type": "expected a number",
    "float_parsing": "expected a number",
    "bool_type": "expected true or false",
    "bool_parsing": "expected true or false",
    "list_type": "expected a list",
    "dict_type": "expected a mapping (key: value pairs)",
    "model_type": "expected a mapping (key: value pairs)",
    "model_attributes_type": "expected a mapping (key: value pairs)",
    "none_required": "expected nothing (null)",
}


def _choices(expected: str) -> list[str]:
    return re.findall(r"'([^']*)'", expected) or [expected]


_SECRET_KEYS = frozenset({"password", "key"})


def problem_from_error(error: Mapping[str, Any], root: type[BaseModel]) -> ConfigProblem:
    """One pydantic error as a problem in the house format, never repeating a secret."""
    loc = tuple(error["loc"])
    kind = error["type"]
    ctx = error.get("ctx") or {}
    value = error.get("input")
    path = _format_path(loc)
    got = show(value)
    if loc and loc[-1] == "dsn" and isinstance(value, str):
        got = show(redact_dsn(value))

    if any(part in _SECRET_KEYS for part in loc if isinstance(part, str)):
        # Someone may have typed the secret itself here: never repeat it.
        got = "a value that is not shown, as it may be a secret"
        if kind in ("model_type", "model_attributes_type", "dict_type"):
            return ConfigProblem(path, "expected a reference to a secret, {env: VARIABLE} or {file: path}, "
                                       f"never the secret itself (got {got})")
    if kind == "pgwarden":
        return ConfigProblem(path, error["msg"])
    if kind == "missing":
        return ConfigProblem(path, "expected a value: this key is required (got nothing)")
    if kind == "extra_forbidden":
        key = str(loc[-1])
        allowed = _keys_at(root, loc[:-1])
        close = difflib.get_close_matches(key, allowed, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        listing = f"expected one of {', '.join(allowed)}" if allowed else "expected no such key"
        # The key, not its value: a stray "passwd: ..." must not be printed back.
        return ConfigProblem(path, f"unknown key; {hint}{listing} (got key {key!r})")
    if kind in ("enum", "literal_error"):
        choices = _choices(str(ctx.get("expected", "")))
        expected = f"expected {choices[0]}" if len(choices) == 1 else f"expected one of {', '.join(choices)}"
        return ConfigProblem(path, f"{expected} (got {got})")
    if kind in ("too_short", "too_long"):
        bound = ctx.get("min_length") if kind == "too_short" else ctx.get("max_length")
        noun = "item" if bound == 1 else "items"
        side = "at least" if kind == "too_short" else "at most"
        return ConfigProblem(path, f"expected {side} {bound} {noun} (got {got})")
    if kind in ("string_too_short",):
        return ConfigProblem(path, f"expected a non-empty string (got {got})")
    if kind in ("greater_than_equal", "greater_than", "less_than_equal", "less_than"):
        op = {"greater_than_equal": ">=", "greater_than": ">", "less_than_equal": "<=", "less_than": "<"}[kind]
        bound = next(iter(ctx.values()), "?")
        return ConfigProblem(path, f"expected a number {op} {bound} (got {got})")
    if kind in _EXPECTED_BY_TYPE:
        return ConfigProblem(path, f"{_EXPECTED_BY_TYPE[kind]} (got {got})")

    message = str(error.get("msg", kind))
    message = message.removeprefix("Value error, ").removeprefix("Assertion failed, ")
    message = re.sub(r"^Input should be ", "expected ", message)
    # Some validators already end with ", got <value>"; keep one "got", in the house format.
    message = re.sub(r",? got .*$", "", message)
    if isinstance(value, Mapping):
        return ConfigProblem(path, message)
    return ConfigProblem(path, f"{message} (got {got})")
