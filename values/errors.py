"""User-facing errors: every problem names the field it is about, never a stack trace.

Pydantic's messages are written for programmers ("Input should be greater than or
equal to 1"); ``format_validation_error`` rewrites them into the pool's voice
("gang.replicas: must be at least 1 (got 0)") with readable paths (dots and [i]).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, get_args

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from values.names import NAME_PATTERN

Problem = tuple[str, str]
"""(field path, message); the path is "" when the problem is about the whole file."""

NAME_RULE = (
    "names are 1-63 lowercase letters, digits, '.', '_' or '-', starting and ending with a letter or digit"
)

# Pydantic adds schema steps to error locations ("function-after[...]", union tags);
# they mean nothing to someone reading their YAML file.
_SCHEMA_STEP = re.compile(r"^[a-z-]+\[.*\]$")
# Our own validators phrase rule violations as "<field> (<value>) ...": the field then
# belongs in the path, which otherwise stops at the model holding it.
_LEADING_FIELD = re.compile(r"^([a-z_][a-z0-9_]*) \(")


class ConfigError(Exception):
    """A config, job spec or state file that cannot be used, with every problem found.

    ``problems`` are (field path, message) pairs; ``source`` is the file (or "<text>");
    ``line_of`` maps a path to its 1-based line in the source where it is known.
    """

    def __init__(
        self,
        problems: Sequence[Problem],
        source: str | None = None,
        line_of: Mapping[str, int] | None = None,
    ) -> None:
        self.problems: list[Problem] = list(problems) or [("", "invalid input")]
        self.source = source
        self.line_of: dict[str, int] = dict(line_of or {})
        super().__init__("\n".join(self.lines()))

    def lines(self) -> list[str]:
        """One line per problem: ``file:line: path: message``, parts omitted when unknown."""
        out = []
        for path, message in self.problems:
            where = self.source or ""
            line = self.line_of.get(path)
            if where and line is not None:
                where = f"{where}:{line}"
            text = f"{path}: {message}" if path else message
            out.append(f"{where}: {text}" if where else text)
        return out

    def with_source(self, source: str, line_of: Mapping[str, int] | None = None) -> ConfigError:
        """The same problems, attributed to ``source`` (for errors raised below the loader)."""
        return ConfigError(self.problems, source, {**self.line_of, **(line_of or {})})


def format_path(loc: Iterable[int | str]) -> str:
    """``('orgs', 2, 'quotas', 'h100')`` -> ``orgs[2].quotas.h100``."""
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif part == "[key]" or _SCHEMA_STEP.match(part):
            continue
        else:
            path += f".{part}" if path else part
    return path


def validation_problems(exc: ValidationError, model: type[BaseModel] | None = None) -> list[Problem]:
    """Each pydantic error as (readable path, readable message). With ``model`` (what
    was validated), an unknown field gets a "did you mean" from the known ones."""
    problems: list[Problem] = []
    errors = exc.errors(include_url=False)
    # Pydantic checks a list's min_length on the items that validated, so one bad item
    # in a one-item list also reports "too short": noise next to the real problem.
    inner = {err["loc"][:i] for err in errors for i in range(len(err["loc"]))}
    for err in errors:
        if err["type"] == "too_short" and err["loc"] in inner:
            continue
        path = format_path(err["loc"])
        message = _message(err)
        leading = _LEADING_FIELD.match(message)
        if leading and not path.endswith(leading.group(1)):
            path = f"{path}.{leading.group(1)}" if path else leading.group(1)
        if "[key]" in err["loc"]:
            message = f"invalid key: {message}"
        if err["type"] == "extra_forbidden" and model is not None and err["loc"]:
            close = difflib.get_close_matches(str(err["loc"][-1]), _field_names(model), n=1)
            message = f"unknown field (did you mean '{close[0]}'?)" if close else message
        problems.append((path, message))
    return problems


def _field_names(model: type[BaseModel]) -> list[str]:
    """Every field name of ``model`` and of the models nested in it."""
    names: set[str] = set()
    todo, seen = [model], set()
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        for name, info in current.model_fields.items():
            names.add(name)
            todo += _models_in(info.annotation)
    return sorted(names)


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in get_args(annotation) for m in _models_in(arg)]


def format_validation_error(exc: ValidationError) -> list[str]:
    """``path: message`` lines, one per problem, in pydantic's (document) order."""
    return [f"{path}: {message}" if path else message for path, message in validation_problems(exc)]


def _got(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _message(err: ErrorDetails) -> str:
    kind = err["type"]
    ctx: dict[str, Any] = dict(err.get("ctx") or {})
    value = err.get("input")
    got = f" (got {_got(value)})"
    if kind == "missing":
        return "is required"
    if kind == "extra_forbidden":
        return "unknown field (check the spelling; see the examples/ directory for the known fields)"
    if kind in ("greater_than_equal", "greater_than", "less_than_equal", "less_than"):
        words = {
            "greater_than_equal": ("at least", "ge"),
            "greater_than": ("greater than", "gt"),
            "less_than_equal": ("at most", "le"),
            "less_than": ("less than", "lt"),
        }[kind]
        return f"must be {words[0]} {ctx[words[1]]}{got}"
    if kind == "string_pattern_mismatch":
        if ctx.get("pattern") == NAME_PATTERN:
            return f"{_got(value)} is not a valid name: {NAME_RULE}"
        return f"{_got(value)} does not match the pattern {ctx.get('pattern')}"
    if kind in ("too_short", "too_long"):
        bound = "at least" if kind == "too_short" else "at most"
        limit = ctx.get("min_length" if kind == "too_short" else "max_length")
        # Pydantic leaves the length out for a mapping; the input still has one.
        actual = ctx.get("actual_length")
        if actual is None and hasattr(value, "__len__"):
            actual = len(value)
        return f"must have {bound} {limit} item(s) (got {actual})"
    if kind in ("string_too_short", "string_too_long"):
        bound = "at least" if kind == "string_too_short" else "at most"
        limit = ctx.get("min_length" if kind == "string_too_short" else "max_length")
        return f"must be {bound} {limit} characters long"
    if kind in ("model_type", "dict_type", "model_attributes_type"):
        return f"must be a mapping (key: value){got}"
    if kind in ("list_type", "tuple_type"):
        return f"must be a list{got}"
    if kind in ("int_parsing", "int_type", "int_from_float"):
        return f"must be a whole number{got}"
    if kind == "finite_number":
        return f"must be a finite number{got}"
    if kind in ("float_parsing", "float_type"):
        return f"must be a number{got}"
    if kind in ("bool_parsing", "bool_type"):
        return f"must be true or false{got}"
    if kind == "string_type":
        return f"must be a string{got}"
    if kind == "value_error":
        return str(ctx.get("error", err["msg"].removeprefix("Value error, ")))
    if kind == "assertion_error":
        return err["msg"].removeprefix("Assertion failed, ")
    message = err["msg"]
    if message.startswith("Input should be"):
        return "must be" + message.removeprefix("Input should be") + got
    return message
