"""The click parameter type of files and folders a verb writes.

:class:`OutputPath` is ``click.Path`` that says "this is an output": the output-path guard of
:mod:`ifu_extract.cli` reads it from each verb's parameters, so no list of output options is
kept anywhere else (a second list once took ``detect --lines`` for an input).  Kept free of
heavy imports: the guard loads it for every command.
"""

from __future__ import annotations

import click

__all__ = ["OutputPath", "is_output"]


class OutputPath(click.Path):
    """A path the command writes (file or folder), as opposed to one it reads."""


def is_output(param: click.Parameter) -> bool:
    """True when *param* names a file or folder its command writes."""
    return isinstance(param.type, OutputPath)
