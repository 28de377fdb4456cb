"""Registers ``astroingest train`` with the host (entry point ``trainer``); imports no torch."""

from __future__ import annotations

from astroingest._hookimpl import hookimpl
from astroingest.commands import Command
from astroingest_trainer import _command


@hookimpl
def astroingest_commands() -> list[Command]:
    return [Command("train", _command.HELP, _command.add_arguments, _command.run)]
