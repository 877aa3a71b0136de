"""The ``contsub`` step: a cube in, the continuum-subtracted cube (and optionally the continuum
cube) out, all-or-nothing (the science is in :mod:`ifu_extract.contsub`)."""

from __future__ import annotations

import dataclasses

from ..contsub import ContsubConfig, ContsubResult, subtract_continuum

__all__ = ["ContsubConfig", "ContsubResult", "run_contsub"]


def run_contsub(cube_path, output, *, continuum=None, config: ContsubConfig | None = None,
                threads: int = 1, progress=None, cube_kwargs: dict | None = None) -> ContsubResult:
    """Subtract the continuum of every spaxel of a cube file.

    Parameters
    ----------
    cube_path : str or os.PathLike
    output : str or os.PathLike
        Continuum-subtracted cube (DATA, STAT), float32 with the input's 3-D WCS.
    continuum : str or os.PathLike, optional
        Also write the continuum model cube here.
    config : ContsubConfig, optional
        The continuum model and channel range.
    threads : int
        Blocks of spaxels processed at the same time (the result does not depend on it).
    progress : callable, optional
        Called as ``progress(rows_done, n_rows)``.
    cube_kwargs : dict, optional
        :func:`~ifu_extract.cubeio.open_cube` options.

    Returns
    -------
    ContsubResult

    Raises
    ------
    InputError
        Bad parameters (named as in :class:`ContsubConfig`), unreadable cube, an output equal to
        the input.  Nothing is written then.
    """
    cfg = config or ContsubConfig()
    opts = dataclasses.asdict(cfg)
    opts["wave_range"] = tuple(cfg.wave_range) if cfg.wave_range else None
    return subtract_continuum(cube_path, output, continuum_path=continuum, threads=threads,
                              progress=progress, cube_kwargs=cube_kwargs, **opts)
