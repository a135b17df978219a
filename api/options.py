"""Command-line options declared once, by the settings dataclass they fill.

A command that takes a settings object (`distill.config.DistillConfig`,
`indexer.options.BuildOptions`, `search.corpus.Fields`) gets one ``--option`` per
field it names: the field's type and default come from the dataclass, its help text
from the ``Attributes:`` section of the class docstring. So each option's default and
help live in one place, and ``--help`` shows them.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Annotated, Any, TypeVar, get_type_hints

import typer

F = TypeVar("F", bound=Callable[..., Any])

_ENTRY = re.compile(r"^(\s*)([A-Za-z_][\w, ]*?):\s+(.*)$")


def attribute_docs(cls: type) -> dict[str, str]:
    """Each attribute's description in `cls`'s Google-style ``Attributes:`` section,
    continuation lines joined; ``a, b: text`` describes both."""
    doc = inspect.cleandoc(cls.__doc__ or "")
    lines = doc.split("Attributes:", 1)[1].splitlines() if "Attributes:" in doc else []
    out: dict[str, str] = {}
    names: list[str] = []
    indent = None
    for line in lines:
        if not line.strip():
            continue
        found = _ENTRY.match(line)
        depth = len(line) - len(line.lstrip())
        if found and (indent is None or depth == indent):
            indent = depth
            names = [n.strip() for n in found.group(2).split(",")]
            for name in names:
                out[name] = found.group(3).strip()
        elif indent is not None and depth > indent:
            for name in names:
                out[name] += " " + line.strip()
        else:
            break  # the section ended
    return out


def _default(field: dataclasses.Field[Any]) -> Any:
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return inspect.Parameter.empty


def option_parameters(
    cls: type,
    names: Sequence[str],
    *,
    flags: Mapping[str, str] | None = None,
    types: Mapping[str, Any] | None = None,
) -> list[inspect.Parameter]:
    """One keyword parameter per field of dataclass `cls` in `names`, annotated as a
    typer option with the field's default and documented help.

    Args:
        flags: Option names that differ from the field's (``{"ondisk": "--on-disk"}``).
        types: Types the command line reads instead of the field's.

    Raises:
        TypeError: a name is not a field of `cls`, or has no description.
    """
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = get_type_hints(cls)
    helps = attribute_docs(cls)
    params = []
    for name in names:
        if name not in fields or name not in helps:
            raise TypeError(f"{cls.__name__}.{name}: no such field, or no description of it")
        decls = [flags[name]] if flags and name in flags else []
        kind = (types or {}).get(name, hints[name])
        option = typer.Option(*decls, help=helps[name], show_default=True)
        params.append(
            inspect.Parameter(
                name,
                inspect.Parameter.KEYWORD_ONLY,
                default=_default(fields[name]),
                annotation=Annotated[kind, option],
            )
        )
    return params


def with_options(
    cls: type,
    names: Sequence[str],
    *,
    into: str,
    flags: Mapping[str, str] | None = None,
    types: Mapping[str, Any] | None = None,
) -> Callable[[F], F]:
    """Give a command one option per named field of `cls`; the command receives their
    values as a dict in its keyword parameter `into` (which the command line does not
    show)."""

    def decorate(func: F) -> F:
        signature = inspect.signature(func, eval_str=True)
        own = [p for p in signature.parameters.values() if p.name != into]
        added = option_parameters(cls, names, flags=flags, types=types)

        @functools.wraps(func)
        def command(**kwargs: Any) -> Any:
            values = {name: kwargs.pop(name) for name in names}
            return func(**kwargs, **{into: values})

        # required options first, so the signature stays valid Python
        params = sorted([*own, *added], key=lambda p: p.default is not inspect.Parameter.empty)
        params = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in params]
        command.__signature__ = signature.replace(parameters=params)  # type: ignore[attr-defined]
        command.__annotations__ = {p.name: p.annotation for p in params}
        del command.__wrapped__  # type: ignore[attr-defined]
        return command  # type: ignore[return-value]

    return decorate
