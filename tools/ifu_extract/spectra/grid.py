"""Wavelength grids of a spectra context: lattices of channels, linear or log, air or vacuum.

Every spectrum of a context sits on the same lattice of channel centres::

    linear:  wave(k) = start + k * step              (Angstrom)
    log10:   wave(k) = 10 ** (start + k * step)      (start and step in dex)

with ``k`` an integer channel number (negative values allowed).  A spectrum is placed on the
lattice by its first channel ``k0`` and its length; aligning spectra of a context is therefore
padding, never resampling.  Resampling is needed only across contexts whose lattices differ,
and only when asked.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from ..errors import InputError

__all__ = ["Grid", "GridMismatch", "air_to_vacuum", "vacuum_to_air", "parse_cutout"]

#: How far (in channels) a spectrum's first channel may sit from a lattice node and still be on
#: the lattice.  SDSS stores ``loglam`` as float32 (about 0.004 channel of rounding at 1e-4 dex);
#: a real phase offset is a sizeable fraction of a channel.
PHASE_TOLERANCE = 0.02

#: Largest relative difference between two steps that are "the same step" (float64 headers).
STEP_RTOL = 1e-7


class GridMismatch(ValueError):
    """A spectrum's wavelength sampling is not on a context's lattice."""


@dataclass(frozen=True)
class Grid:
    """A wavelength lattice.

    Parameters
    ----------
    kind : {'linear', 'log10'}
        Spacing of the channel centres.
    start : float
        Centre of channel 0: Angstrom (linear) or log10 of Angstrom (log10).
    step : float
        Channel spacing: Angstrom (linear) or dex (log10); positive.
    medium : {'air', 'vacuum'}
        Medium in which the wavelengths are measured.
    unit : str
        Wavelength unit of :meth:`wave` (always ``'Angstrom'``: inputs are converted).
    """

    kind: str
    start: float
    step: float
    medium: str
    unit: str = "Angstrom"

    def __post_init__(self):
        if self.kind not in ("linear", "log10"):
            raise ValueError(f"grid kind must be 'linear' or 'log10', not {self.kind!r}")
        if self.medium not in ("air", "vacuum"):
            raise ValueError(f"grid medium must be 'air' or 'vacuum', not {self.medium!r}")
        if not (self.step > 0 and math.isfinite(self.step) and math.isfinite(self.start)):
            raise ValueError("grid start and step must be finite, step > 0")

    # -- lattice arithmetic -------------------------------------------------------------------
    def wave(self, k) -> np.ndarray:
        """Centre wavelength (Angstrom, float64) of channel(s) *k*."""
        k = np.asarray(k, dtype=np.float64)
        if self.kind == "linear":
            return self.start + k * self.step
        return 10.0 ** (self.start + k * self.step)

    def channel_float(self, wave) -> np.ndarray:
        """Fractional channel number of wavelength(s) *wave* (Angstrom)."""
        wave = np.asarray(wave, dtype=np.float64)
        if self.kind == "linear":
            return (wave - self.start) / self.step
        with np.errstate(divide="ignore", invalid="ignore"):
            return (np.log10(wave) - self.start) / self.step

    def channels_inside(self, w0: float, w1: float) -> tuple[int, int]:
        """Channels whose centre lies inside ``[w0, w1]`` (Angstrom, inclusive).

        Returns
        -------
        (k_lo, k_hi) : tuple of int
            Half-open range ``k_lo <= k < k_hi``; empty when ``k_hi <= k_lo``.  The test is
            made on the centres exactly as :meth:`wave` computes them, so the bounds are exact
            to the channel.
        """
        lo = int(math.ceil(float(self.channel_float(w0)) - 1e-6))
        hi = int(math.floor(float(self.channel_float(w1)) + 1e-6))
        while float(self.wave(lo)) < w0:
            lo += 1
        while float(self.wave(lo - 1)) >= w0:
            lo -= 1
        while float(self.wave(hi)) > w1:
            hi -= 1
        while float(self.wave(hi + 1)) <= w1:
            hi += 1
        return lo, max(hi + 1, lo)

    def locate(self, first: float, step: float, kind: str, medium: str) -> int:
        """Channel number of a spectrum's first channel on this lattice.

        Parameters
        ----------
        first : float
            First channel centre of the spectrum: Angstrom (linear) or dex (log10).
        step, kind, medium
            The spectrum's own sampling, as in :class:`Grid`.

        Raises
        ------
        GridMismatch
            When the spectrum is not on the lattice (other kind, medium or step, or a phase
            offset).
        """
        if kind != self.kind or medium != self.medium:
            raise GridMismatch(f"a {kind} grid in {medium} does not fit a {self.kind} grid in "
                               f"{self.medium}")
        if abs(step - self.step) > STEP_RTOL * self.step:
            raise GridMismatch(f"step {step:.9g} differs from the context step {self.step:.9g}")
        kf = (first - self.start) / self.step
        k0 = int(round(kf))
        if abs(kf - k0) > PHASE_TOLERANCE:
            raise GridMismatch(f"first channel is {kf - k0:+.3f} channel off the context lattice")
        return k0

    def same_lattice(self, other: "Grid") -> int | None:
        """Channel offset ``d`` such that ``other`` channel ``k`` is this grid's ``k + d``.

        ``None`` when the lattices differ (kind, medium, step or phase).
        """
        try:
            return self.locate(other.start, other.step, other.kind, other.medium)
        except GridMismatch:
            return None

    # -- (de)serialisation ----------------------------------------------------------------------
    def to_dict(self) -> dict:
        """Plain dict (JSON) form."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Grid":
        """Inverse of :meth:`to_dict`."""
        return cls(kind=d["kind"], start=float(d["start"]), step=float(d["step"]),
                   medium=d["medium"], unit=d.get("unit", "Angstrom"))

    def describe(self) -> str:
        """One line for people: ``linear, 1.25 Angstrom, air``."""
        if self.kind == "linear":
            return f"linear, {self.step:g} Angstrom per channel, {self.medium}"
        return f"log10, {self.step:g} dex per channel, {self.medium}"


def vacuum_to_air(wave) -> np.ndarray:
    """Vacuum to air wavelength (Angstrom): Ciddor (1996), as in the SDSS idlutils ``vactoair``.

    Wavelengths below 2000 Angstrom are returned unchanged (no air standard there).
    """
    wave = np.asarray(wave, dtype=np.float64)
    s2 = (1e4 / wave) ** 2
    factor = 1.0 + 5.792105e-2 / (238.0185 - s2) + 1.67917e-3 / (57.362 - s2)
    return np.where(wave >= 2000.0, wave / factor, wave)


def air_to_vacuum(wave) -> np.ndarray:
    """Air to vacuum wavelength (Angstrom); inverse of :func:`vacuum_to_air` to 1e-9 relative."""
    air = np.asarray(wave, dtype=np.float64)
    vac = air.copy()
    for _ in range(4):  # fixed-point iteration, converges in 2-3 steps
        vac = vac + (air - vacuum_to_air(vac))
    return vac


def parse_cutout(cutout) -> tuple[float, float] | None:
    """Parse a cut-out ``'6500-7200'`` (or a pair) into ``(w0, w1)`` in Angstrom.

    Raises
    ------
    InputError
        When the text is not two increasing positive numbers.
    """
    if cutout is None or cutout == "" or cutout is False:
        return None
    if isinstance(cutout, str):
        text = cutout.strip()
        parts = text.replace(",", " ").replace(":", " ").split()
        if len(parts) == 1 and "-" in text[1:]:
            cut = text.index("-", 1)
            parts = [text[:cut], text[cut + 1:]]
        if len(parts) != 2:
            raise InputError("cutout", f"cannot read {cutout!r}",
                             "give it as '<start>-<end>' in Angstrom, e.g. '6500-7200'")
    else:
        parts = list(cutout)
        if len(parts) != 2:
            raise InputError("cutout", "needs two wavelengths", "give '<start>-<end>' in Angstrom")
    try:
        w0, w1 = float(parts[0]), float(parts[1])
    except (TypeError, ValueError):
        raise InputError("cutout", f"cannot read {cutout!r}",
                         "give it as '<start>-<end>' in Angstrom, e.g. '6500-7200'") from None
    if not (math.isfinite(w0) and math.isfinite(w1) and 0 < w0 < w1):
        raise InputError("cutout", f"{w0:g}-{w1:g} is not an increasing positive range",
                         "give '<start>-<end>' in Angstrom with start < end")
    return w0, w1
