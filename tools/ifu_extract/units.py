"""Lenient parsing of the flux units found in IFU cube headers.

Pipelines write units astropy's strict FITS parser refuses: MUSE ``10**(-20)*erg/s/cm**2/
Angstrom``, MaNGA ``1E-17 erg/s/cm^2/Ang/spaxel``, KCWI ``FLAM16``, and surface-brightness
cubes ``.../arcsec2``.  :func:`parse_flux_unit` normalises the string and separates the
per-area part, so that sums over spaxels are done on per-spaxel values.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass

from astropy import units as u

__all__ = ["FluxUnit", "display_unit", "parse_flux_unit"]

_PER_SPAXEL = re.compile(r"\s*/\s*(spaxel|spx|pix(el)?)\b", re.I)
_PER_ARCSEC2 = re.compile(r"\s*/\s*(arcsec\s*(\*\*\s*2|\^\s*2|2)|arcsec\s*\*\*\s*\(2\)|sq\.?\s*arcsec)",
                          re.I)
_KNOWN_ALIASES = {
    "FLAM": "erg/s/cm2/Angstrom",
    "FLAM16": "1e-16 erg/s/cm2/Angstrom",
    "FLAM17": "1e-17 erg/s/cm2/Angstrom",
    "FLAM20": "1e-20 erg/s/cm2/Angstrom",
}


@dataclass(frozen=True)
class FluxUnit:
    """A parsed flux unit.

    Attributes
    ----------
    unit : astropy.units.UnitBase or None
        The per-spaxel (or per-object) unit; None when the string could not be understood.
    per_area : str or None
        ``"arcsec2"`` for surface-brightness cubes, ``"spaxel"`` when the unit said so
        explicitly, None otherwise.
    text : str
        The header's original string.
    """

    unit: u.UnitBase | None
    per_area: str | None
    text: str

    def to_string(self) -> str:
        """The unit as a FITS-friendly string ('' when unknown)."""
        if self.unit is None:
            return self.text
        return self.unit.to_string("fits")


def parse_flux_unit(text: str | None) -> FluxUnit:
    """Parse a BUNIT string leniently.

    Parameters
    ----------
    text : str or None
        The BUNIT card value.

    Returns
    -------
    FluxUnit
    """
    raw = (text or "").strip()
    if not raw:
        return FluxUnit(None, None, "")
    s = raw
    per_area = None
    if _PER_ARCSEC2.search(s):
        per_area = "arcsec2"
        s = _PER_ARCSEC2.sub("", s)
    elif _PER_SPAXEL.search(s):
        per_area = "spaxel"
        s = _PER_SPAXEL.sub("", s)
    s = _KNOWN_ALIASES.get(s.strip().upper(), s)
    # 10**(-20)*erg..., 10^-17 erg..., 1.0E-20 erg...
    s = re.sub(r"10\s*(\*\*|\^)\s*\(?\s*([+-]?\d+)\s*\)?", r"1e\2", s)
    s = re.sub(r"\bAng\b", "Angstrom", s)
    s = re.sub(r"\bA\b(?!\w)", "Angstrom", s) if "erg" in s else s
    s = s.replace("^", "")
    s = re.sub(r"\s*\*\s*", " ", s)
    unit = None
    for fmt in ("generic", "fits", "cds"):
        try:
            unit = u.Unit(s, format=fmt, parse_strict="raise")
            break
        except (ValueError, TypeError):
            continue
    return FluxUnit(unit, per_area, raw)


_SUPERSCRIPT = str.maketrans("0123456789-+.", "⁰¹²³⁴⁵⁶⁷⁸⁹⁻⁺·")
#: Order in which astronomers write the parts of a flux density unit (erg s⁻¹ cm⁻² Å⁻¹).
_ORDER = ("erg", "J", "W", "mW", "Jy", "mJy", "uJy", "s", "cm", "m", "Angstrom", "nm", "um", "Hz",
          "sr", "arcsec", "pix")
_SYMBOL = {"Angstrom": "Å", "um": "µm", "uJy": "µJy", "ct": "count"}


def display_unit(text: str | None) -> str:
    """A unit written as astronomers write it, for figures and pages.

    ``10**(-20)*erg/s/cm**2/Angstrom`` becomes ``10⁻²⁰ erg s⁻¹ cm⁻² Å⁻¹``.  Strings that
    :func:`parse_flux_unit` does not understand are returned unchanged.

    Parameters
    ----------
    text : str or None
        A BUNIT-like string.

    Returns
    -------
    str
    """
    with warnings.catch_warnings():   # multiple slashes: understood, only discouraged by FITS
        warnings.simplefilter("ignore")
        parsed = parse_flux_unit(text)
    unit = parsed.unit
    if unit is None:
        return parsed.text
    try:
        scale, bases, powers = unit.scale, unit.bases, unit.powers
    except AttributeError:
        return parsed.text
    rank = {name: k for k, name in enumerate(_ORDER)}
    parts = sorted(zip(bases, powers), key=lambda bp: (rank.get(bp[0].to_string(), len(_ORDER)),
                                                      bp[0].to_string()))
    words = []
    if scale != 1:
        exp = f"{scale:.0e}".split("e")
        mant, power = float(exp[0]), int(exp[1])
        if abs(mant - 1.0) < 1e-9:
            words.append("10" + str(power).translate(_SUPERSCRIPT))
        else:
            words.append(f"{scale:g}")
    for base, power in parts:
        name = base.to_string()
        sym = _SYMBOL.get(name, name)
        p = float(power)
        if p != 1:
            ptxt = str(int(p)) if p.is_integer() else f"{p:g}"
            sym += ptxt.translate(_SUPERSCRIPT)
        words.append(sym)
    if parsed.per_area == "arcsec2":
        words.append("arcsec⁻²")
    return " ".join(words)
