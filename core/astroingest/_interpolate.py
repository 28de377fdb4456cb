"""``${VAR}`` in sources.toml: secrets from the environment or a ``.env`` file beside it."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from dotenv import dotenv_values

_VAR = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


class UndefinedVariable(Exception):
    def __init__(self, name: str, where: tuple[str | int, ...]) -> None:
        super().__init__(name)
        self.name = name
        self.where = where


def environment_for(config_path: Path) -> dict[str, str]:
    """The process environment over the ``.env`` beside the config (the process wins)."""
    dotenv = config_path.parent / ".env"
    values: dict[str, str] = {}
    if dotenv.is_file():
        values.update({k: v for k, v in dotenv_values(dotenv).items() if v is not None})
    values.update(os.environ)
    return values


def interpolate(
    value: Any,
    env: Mapping[str, str],
    secrets: set[str],
    where: tuple[str | int, ...] = (),
    lenient: frozenset[tuple[str | int, ...]] = frozenset(),
) -> Any:
    """A copy of ``value`` with every ``${VAR}`` replaced; ``$$`` is a literal ``$``.

    Each substituted value is added to ``secrets`` so the redactor can scrub it. Under a
    path in ``lenient`` (a disabled source) an undefined variable is left as written, so
    a newcomer without that account can still run everything else.
    """
    if isinstance(value, str):
        strict = not any(where[: len(p)] == p for p in lenient)
        return _substitute(value, env, secrets, where, strict)
    if isinstance(value, dict):
        return {k: interpolate(v, env, secrets, (*where, k), lenient) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env, secrets, (*where, i), lenient) for i, v in enumerate(value)]
    return value


def _substitute(
    text: str,
    env: Mapping[str, str],
    secrets: set[str],
    where: tuple[str | int, ...],
    strict: bool,
) -> str:
    def replace(match: re.Match[str]) -> str:
        name = match.group(1)
        if name is None:
            return "$"
        if name not in env:
            if strict:
                raise UndefinedVariable(name, where)
            return match.group(0)
        if env[name]:
            secrets.add(env[name])
        return env[name]

    return _VAR.sub(replace, text)
