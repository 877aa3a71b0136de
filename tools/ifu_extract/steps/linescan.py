"""The ``--line-scan`` step of ``detect`` and ``run``: files in, catalogue and files out.

:func:`run_line_scan` opens the cube (and the continuum-subtracted cube when given), scans it
(:func:`ifu_extract.linescan.scan_lines`), merges the emitters into a catalogue
(:func:`ifu_extract.emitters.scan_catalog`) and writes the per-line table and the emitters'
narrow-band images, as part of the caller's all-or-nothing :class:`~._outputs.OutputSet`.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

from astropy.table import Table

from ..catalog import write_catalog
from ..cubeio import open_cube
from ..emitters import scan_catalog, write_emitter_images, write_no_emitter_images
from ..errors import ParameterError
from ..identity import check_product
from ..linescan import LineScan, ScanConfig, empty_line_table, scan_psf
from ..psf import PSFModel
from ._outputs import OutputSet

__all__ = ["LineScanRequest", "run_line_scan", "write_scan_off", "SCAN_PARAMS"]

#: :class:`ScanConfig` field -> the name the steps give it (``detect``'s parameters), so that
#: an error of the scan names the step's parameter (``line_snr``), not the field (``snr``).
SCAN_PARAMS = {"snr": "line_snr", "line_fwhm": "line_profile_fwhm", "window": "line_window",
               "merge_radius": "line_merge_radius", "side_width": "line_side_width",
               "continuum_width": "line_continuum_width", "sky_windows": "sky_windows",
               "wave_range": "line_wave_range", "lbda": "line_wave"}


@dataclass(frozen=True)
class LineScanRequest:
    """What a step asks of the line scan.

    Attributes
    ----------
    config : ScanConfig
        The scan's options (threshold, profile, continuum, bands...).
    contsub : str or os.PathLike, optional
        Continuum-subtracted cube (``contsub``) scanned instead of the cube; the scan's own
        continuum removal and side bands are then off (``continuum_width = side_width = 0``).
    fwhm : float, optional
        PSF FWHM, arcsec (default: :func:`ifu_extract.psf.resolve_psf`'s policy).
    fallback_fwhm : float, optional
        FWHM, arcsec, of the PSF used only when the cube has no FSF keywords and no star could be
        fitted (``--fwhm-fallback``).
    lines, images : str or os.PathLike, optional
        Where to write the line table (format by suffix) and the emitters' narrow-band images.
    enabled : bool
        False: the scan is off, and *lines* and *images* are written holding no line
        (``LINESCAN = F``; :func:`write_scan_off`), so that a workflow's on/off switch always
        gives the next steps the datasets they read.
    """

    config: ScanConfig = field(default_factory=ScanConfig)
    contsub: object = None
    fwhm: float | None = None
    fallback_fwhm: float | None = None
    lines: object = None
    images: object = None
    enabled: bool = True


def run_line_scan(cube_path, table: Table | None, request: LineScanRequest, *,
                  cube_ext: dict | None = None, psf: PSFModel | None = None,
                  outputs: OutputSet | None = None, inputs: dict | None = None,
                  lines_format: str = "auto") -> tuple[Table, LineScan]:
    """Scan *cube_path* for line emitters and merge them into *table*.

    Parameters
    ----------
    cube_path : str or os.PathLike
    table : astropy.table.Table or None
        Catalogue to merge into (``ID``, ``RA``, ``DEC``...); None: the emitters alone.
    request : LineScanRequest
    cube_ext : dict, optional
        ``data_ext``, ``var_ext``, ``dq_ext`` of :func:`ifu_extract.cubeio.open_cube`.
    psf : PSFModel, optional
        The PSF already resolved by the caller (``run`` resolves it once); default:
        :func:`ifu_extract.linescan.scan_psf` with ``request.fwhm`` and *table*'s objects.
    outputs : OutputSet, optional
        The caller's all-or-nothing set the line table and images join; default: a set of
        their own.
    inputs : dict, optional
        Provenance of the images file (default ``{"cube": cube_path}``).

    Returns
    -------
    merged : astropy.table.Table
        *table* with the objects (see :func:`ifu_extract.emitters.merge_emitters`).
    scan : LineScan
    """
    own = outputs is None
    with contextlib.ExitStack() as stack:
        if own:
            outputs = stack.enter_context(OutputSet())
        cube = stack.enter_context(open_cube(cube_path, **(cube_ext or {})))
        cs = stack.enter_context(open_cube(request.contsub)) if request.contsub else None
        if cs is not None:
            check_product(cs.primary_header, cs.path, cube, cube.path,
                          what="continuum-subtracted cube", channels=False)
        if psf is None:
            psf = scan_psf(cube, request.fwhm, table=table, fallback_fwhm=request.fallback_fwhm)
        try:
            merged, scan = scan_catalog(cube, table, contsub=cs, psf=psf, config=request.config)
        except ParameterError as exc:
            raise exc.relabel({p: SCAN_PARAMS.get(p, p) for p in exc.params}) from None
        if request.lines:
            write_catalog(scan.lines, outputs.path(request.lines), lines_format)
        if request.images:
            write_emitter_images(outputs.path(request.images, suffix=".fits"), cube, scan,
                                 contsub=cs, inputs=inputs or {"cube": str(cube_path)})
    return merged, scan


def write_scan_off(request: LineScanRequest, outputs: OutputSet, *, inputs: dict | None = None,
                   lines_format: str = "auto") -> None:
    """Write the line table and the images file of *request* holding no line: the scan is off.

    The table has the line table's columns and no row, ``LINESCAN = False`` in its meta; the
    images file one primary HDU with ``LINESCAN = F`` and ``NEMIT = 0``.  Read back, they give
    no line and no emitter (``extract --line-images`` adds no ``MUSE_NB`` spectrum).
    """
    if request.lines:
        write_catalog(empty_line_table(), outputs.path(request.lines), lines_format)
    if request.images:
        write_no_emitter_images(outputs.path(request.images, suffix=".fits"), inputs=inputs)
