"""MUSE pixel-table header conventions (``HIERARCH ESO DRS MUSE PIXTABLE ...``).

The MUSE pipeline records everything a pixel table needs beyond its columns in primary-header
keywords with the prefix :data:`KEYWORD`:

``WCS``                     the coordinate convention of ``xpos``/``ypos``: ``positioned (final)``
                            (RA/Dec offsets from ``CRVAL1/2``, deg), ``projected (intermediate)``
                            (native spherical ``phi, theta - pi/2`` about ``RA/DEC``, rad) or
                            ``pixel`` (before astrometry; no sky coordinates)
``LIMITS X|Y|LAMBDA|IFU|SLICE LOW|HIGH``   column limits
``MERGED``                  number of IFUs merged into the table
``FLUXCAL``, ``SKYSUB``, ``WEIGHTED``      processing flags
``COMBINED``, ``EXPn FIRST|LAST``          exposures of a combined table (0-based row ranges)
``EXP0 IFUnn SLICEnn XOFFSET``             detector x offset of each slice (origin decoding)

This module reads them into a :class:`TableMeta` and writes the updated ones on output, following
MPDAF's :class:`~mpdaf.drs.PixTable` where it defines the behaviour.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np
from astropy import units as u
from astropy.io import fits

from ..errors import InputError

__all__ = [
    "KEYWORD",
    "COLUMNS",
    "NIFU",
    "NSLICE",
    "CONVENTIONS",
    "TableMeta",
    "key",
    "get_keyword",
    "read_meta",
    "ccd_to_sky_slice",
    "sky_to_ccd_slice",
    "stack_ccd_slices",
    "LIMIT_KEYS",
    "ensure_limit_cards",
    "set_limits",
    "set_exposures",
]

#: Prefix of every pixel-table keyword (the MUSE pipeline's ``MUSE_HDR_PT``).
KEYWORD = "HIERARCH ESO DRS MUSE PIXTABLE"

#: The seven columns of a pixel table, in the pipeline's order (MPDAF reads the units of the
#: binary-table layout by position: TUNIT1 xpos, TUNIT3 lambda, TUNIT4 data).
COLUMNS = ("xpos", "ypos", "lambda", "data", "dq", "stat", "origin")

#: On-disk type of each column (float32 and int32 in both layouts).
COLUMN_DTYPES = {"xpos": ">f4", "ypos": ">f4", "lambda": ">f4", "data": ">f4", "dq": ">i4",
                 "stat": ">f4", "origin": ">i4", "weight": ">f4"}

NIFU = 24
NSLICE = 48

#: First word of the ``WCS`` keyword -> whether xpos/ypos are sky coordinates.
CONVENTIONS = {"positioned": True, "projected": True, "pixel": False}

# CCD -> SKY slice numbering inside one group of 12 slices (MUSE "Global Positioning System",
# VLT-TRE-MUSE-14670-0657); the pattern repeats with +12 for each of the 4 groups.
_CCD2SKY_12 = (9, 8, 1, 10, 7, 2, 11, 6, 3, 12, 5, 4)

_XOFFSET_RE = re.compile(r"^ESO DRS MUSE PIXTABLE EXP0 IFU(\d+) SLICE(\d+) XOFFSET$")
_EXP_RE = re.compile(r"^ESO DRS MUSE PIXTABLE EXP(\d+) (FIRST|LAST)$")

_NOT_SET = object()


def key(name: str) -> str:
    """Full keyword for a pixel-table keyword *name* (``"LIMITS X LOW"``)."""
    return f"{KEYWORD} {name}"


def get_keyword(header: fits.Header, name: str, default=_NOT_SET):
    """Value of pixel-table keyword *name*; *default* (or KeyError) when absent."""
    try:
        return header[key(name)]
    except KeyError:
        if default is _NOT_SET:
            raise
        return default


def ccd_to_sky_slice(ccd):
    """Slice number in SKY numbering from CCD numbering (1..48, scalar or array)."""
    ccd = np.asarray(ccd)
    group, within = np.divmod(ccd - 1, 12)
    return np.asarray(_CCD2SKY_12)[within] + 12 * group


def sky_to_ccd_slice(sky):
    """Slice number in CCD numbering from SKY numbering (1..48, scalar or array)."""
    inverse = np.empty(12, dtype=int)
    inverse[np.asarray(_CCD2SKY_12) - 1] = np.arange(1, 13)
    sky = np.asarray(sky)
    group, within = np.divmod(sky - 1, 12)
    return inverse[within] + 12 * group


def stack_ccd_slices(stack: int) -> list[int]:
    """CCD slice numbers of *stack* (1..4): SKY slices ``12*(stack-1)+1 .. 12*stack``.

    MPDAF's ``select_stacks`` iterates ``range(1 + 12*(st-1), 12*st - 1)`` and so leaves out the
    last two SKY slices of each stack; here a stack has its 12 slices.
    """
    sky = np.arange(12 * (stack - 1) + 1, 12 * stack + 1)
    return sorted(int(s) for s in sky_to_ccd_slice(sky))


@dataclass
class TableMeta:
    """What the primary header says about a pixel table.

    Attributes
    ----------
    wcs_value, wcs_comment : str or None
        The ``WCS`` keyword and its comment, verbatim.
    convention : str or None
        First word of ``WCS`` (``positioned``, ``projected``, ``pixel``, or an unknown word).
    xc, yc : float
        Field centre in degrees (``CRVAL1/2`` for positioned tables, ``RA/DEC`` for projected
        ones, converted with ``CUNIT1`` as MPDAF does); 0 when unknown.
    nifu : int
        ``MERGED`` (1 when absent).
    fluxcal, skysub, weighted : bool
    exposures : list of (int, int)
        0-based (first, last) row of each exposure of a combined table (empty otherwise).
    xoffset : ndarray of int32, shape (32, 64)
        ``EXP0 IFUnn SLICEnn XOFFSET`` indexed ``[ifu, slice]``; -1 where absent.
    """

    wcs_value: str | None = None
    wcs_comment: str | None = None
    convention: str | None = None
    xc: float = 0.0
    yc: float = 0.0
    nifu: int = 1
    fluxcal: bool = False
    skysub: bool = False
    weighted: bool = False
    exposures: list = field(default_factory=list)
    xoffset: np.ndarray = field(default_factory=lambda: np.full((32, 64), -1, dtype=np.int32))
    has_center: bool = False

    @property
    def has_sky(self) -> bool:
        """True when xpos/ypos are sky coordinates in a convention this module knows."""
        return CONVENTIONS.get(self.convention, False)

    def require_sky(self, path) -> None:
        """Raise :class:`InputError` unless xpos/ypos can be turned into RA/Dec."""
        if self.convention is None:
            raise InputError(path, f"has no '{key('WCS')}' keyword, so its positions cannot be "
                             "placed on the sky", "select by IFU, slice or wavelength instead")
        if self.convention not in CONVENTIONS:
            raise InputError(path, f"unknown WCS convention '{self.wcs_value}' (expected "
                             "'positioned' or 'projected')",
                             "use a pixel table from muse_scipost or muse_exp_align")
        if not CONVENTIONS[self.convention]:
            raise InputError(path, "has pixel-stage coordinates (WCS 'pixel'), not sky "
                             "coordinates", "select by IFU, slice or wavelength instead")
        if not self.has_center:
            keys = "RA/DEC" if self.convention == "projected" else "CRVAL1/CRVAL2"
            raise InputError(path, f"has no field centre ({keys} in the primary header), so its "
                             "positions cannot be placed on the sky",
                             f"add the {keys} keywords the MUSE pipeline writes, or select by IFU, "
                             "slice or wavelength instead")


def _center(header: fits.Header, convention: str | None) -> tuple[float, float] | None:
    """Field centre, degrees; None when the keywords of *convention* are absent or not numbers."""
    if convention == "projected":
        kx, ky = "RA", "DEC"
    elif convention == "positioned":
        kx, ky = "CRVAL1", "CRVAL2"
    else:
        return None
    if kx not in header or ky not in header:
        return None
    if not all(isinstance(header[k], (int, float)) and not isinstance(header[k], bool)
               and np.isfinite(header[k]) for k in (kx, ky)):
        return None
    try:
        unit = u.Unit(header["CUNIT1"])
        return (float((header[kx] * unit).to_value(u.deg)),
                float((header[ky] * unit).to_value(u.deg)))
    except (KeyError, ValueError, TypeError, u.UnitsError):
        return float(header[kx]), float(header[ky])


_XOFFSET_CARD = re.compile(r"HIERARCH ESO DRS MUSE PIXTABLE EXP0 IFU(\d+) SLICE(\d+) XOFFSET\s*=\s*"
                           r"([-+]?\d+)")


def _xoffsets_from_text(text: str, meta: TableMeta) -> None:
    for card in (text[i:i + 80] for i in range(0, len(text), 80)):
        m = _XOFFSET_CARD.match(card)
        if m:
            ifu, sli = int(m.group(1)), int(m.group(2))
            if 0 <= ifu < 32 and 0 <= sli < 64:
                meta.xoffset[ifu, sli] = int(m.group(3))


def read_meta(header: fits.Header, raw_text: str | None = None) -> TableMeta:
    """Parse the pixel-table keywords of a primary *header* into a :class:`TableMeta`.

    Parameters
    ----------
    header : astropy.io.fits.Header
    raw_text : str, optional
        The header as stored (80-character cards): the 1152 XOFFSET cards of a full table are
        read from it with one pattern, ~50x faster than through astropy's card parser.
    """
    meta = TableMeta()
    wkey = key("WCS")
    if wkey in header:
        meta.wcs_value = str(header[wkey])
        meta.wcs_comment = header.comments[wkey]
        meta.convention = meta.wcs_value.split(" ")[0] if meta.wcs_value.strip() else ""
    centre = _center(header, meta.convention)
    meta.has_center = centre is not None
    meta.xc, meta.yc = centre if centre is not None else (0.0, 0.0)
    meta.nifu = int(get_keyword(header, "MERGED", 1))
    meta.fluxcal = bool(get_keyword(header, "FLUXCAL", False))
    meta.skysub = bool(get_keyword(header, "SKYSUB", False))
    meta.weighted = bool(get_keyword(header, "WEIGHTED", False))
    ncomb = get_keyword(header, "COMBINED", None)
    if raw_text is not None:
        _xoffsets_from_text(raw_text, meta)
    else:
        for name in header.keys():
            m = _XOFFSET_RE.match(name)
            if m:
                ifu, sli = int(m.group(1)), int(m.group(2))
                if 0 <= ifu < 32 and 0 <= sli < 64:
                    meta.xoffset[ifu, sli] = int(header[name])
    if ncomb is not None:
        exps = []
        for i in range(1, int(ncomb) + 1):
            first = get_keyword(header, f"EXP{i} FIRST", None)
            last = get_keyword(header, f"EXP{i} LAST", None)
            if first is None or last is None:
                break
            exps.append((int(first), int(last)))
        meta.exposures = exps
    return meta


#: Limit keywords MPDAF's extract rewrites, with the type of their value.
LIMIT_KEYS = (("LIMITS X LOW", float), ("LIMITS X HIGH", float), ("LIMITS Y LOW", float),
              ("LIMITS Y HIGH", float), ("LIMITS LAMBDA LOW", float),
              ("LIMITS LAMBDA HIGH", float), ("LIMITS IFU LOW", int), ("LIMITS IFU HIGH", int),
              ("LIMITS SLICE LOW", int), ("LIMITS SLICE HIGH", int))


def ensure_limit_cards(header: fits.Header) -> None:
    """Make sure the limit cards exist (placeholders), so that the header keeps its size when
    the real values are filled in after the data are written."""
    for name, kind in LIMIT_KEYS:
        if key(name) not in header:
            header[key(name)] = kind(0)


def set_limits(header: fits.Header, stats, nifu_in: int) -> None:
    """Write the limits of the rows of a new table (MPDAF ``extract_from_mask`` semantics).

    Parameters
    ----------
    header : astropy.io.fits.Header
        Primary header, modified in place.
    stats : ColumnStats
        Limits accumulated over the written rows.
    nifu_in : int
        ``MERGED`` of the input table: the new count is written only when it was > 1.
    """
    header[key("LIMITS X LOW")] = float(stats.lo["xpos"])
    header[key("LIMITS X HIGH")] = float(stats.hi["xpos"])
    header[key("LIMITS Y LOW")] = float(stats.lo["ypos"])
    header[key("LIMITS Y HIGH")] = float(stats.hi["ypos"])
    header[key("LIMITS LAMBDA LOW")] = float(stats.lo["lambda"])
    header[key("LIMITS LAMBDA HIGH")] = float(stats.hi["lambda"])
    header[key("LIMITS IFU LOW")] = int(stats.ifu_lo)
    header[key("LIMITS IFU HIGH")] = int(stats.ifu_hi)
    header[key("LIMITS SLICE LOW")] = int(stats.slice_lo)
    header[key("LIMITS SLICE HIGH")] = int(stats.slice_hi)
    if nifu_in > 1:
        header[key("MERGED")] = int(stats.n_ifus)


def set_exposures(header: fits.Header, ranges: list[tuple[int, int]], n_before: int) -> None:
    """Rewrite ``COMBINED``/``EXPn FIRST|LAST`` for the exposures kept in a new table.

    Parameters
    ----------
    ranges : list of (int, int)
        0-based (first, last) rows, in the new table, of each exposure that kept rows, in order.
    n_before : int
        ``COMBINED`` of the input; the keywords of dropped exposures are deleted.
    """
    header[key("COMBINED")] = len(ranges)
    for i, (first, last) in enumerate(ranges, start=1):
        header[key(f"EXP{i} FIRST")] = int(first)
        header[key(f"EXP{i} LAST")] = int(last)
    for i in range(len(ranges) + 1, n_before + 1):
        for which in ("FIRST", "LAST"):
            header.remove(key(f"EXP{i} {which}"), ignore_missing=True)
