"""The ``split`` step: a catalogue cut into consecutive parts of near-equal size.

The parts are written all together or not at all (:func:`~ifu_extract.catalog_parts.split_catalog`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..catalog_parts import SplitPart, split_catalog
from ..errors import ParameterError

__all__ = ["SplitConfig", "SplitResult", "run_split"]


@dataclass
class SplitConfig:
    """How the catalogue is split.

    Attributes
    ----------
    n_parts : int
        Number of parts (1 to the number of rows).
    catalog_format : str
        Input format (``auto`` detects it).
    output_format : str
        :data:`~ifu_extract.catalog_parts.SPLIT_FORMATS`: ``same`` keeps the input's.
    prefix : str, optional
        Stem of the part names (default: the catalogue's stem).
    suffix : str, optional
        File-name suffix of the parts, e.g. ``.tabular`` for Galaxy (default: the format's).
    """

    n_parts: int = 2
    catalog_format: str = "auto"
    output_format: str = "same"
    prefix: str | None = None
    suffix: str | None = None


@dataclass
class SplitResult:
    """What :func:`run_split` wrote.

    Attributes
    ----------
    output : pathlib.Path
        Folder of the parts.
    parts : list of SplitPart
        In catalogue order.
    """

    output: Path
    parts: list = field(default_factory=list)

    @property
    def n_rows(self) -> int:
        return sum(p.n_rows for p in self.parts)


def _check_stem(value: str | None, param: str) -> None:
    if value is not None and (not value.strip() or any(c in value for c in "/\\\0")):
        raise ParameterError("{%s}" % param, f"{value!r} is not a file name part", "give a name "
                             "without folders", params=(param,))


def run_split(catalog, output, config: SplitConfig | None = None) -> SplitResult:
    """Split *catalog* into ``config.n_parts`` parts in the folder *output* (created).

    Raises
    ------
    InputError
        Unreadable catalogue, a part count out of range, a prefix or suffix with folders in it.
        Nothing is written then.
    """
    cfg = config or SplitConfig()
    _check_stem(cfg.prefix, "prefix")
    _check_stem(cfg.suffix, "suffix")
    parts: list[SplitPart] = split_catalog(catalog, cfg.n_parts, output, fmt=cfg.catalog_format,
                                           output_format=cfg.output_format, prefix=cfg.prefix,
                                           suffix=cfg.suffix)
    return SplitResult(Path(output), parts)
