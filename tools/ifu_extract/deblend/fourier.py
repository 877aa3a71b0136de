"""Exact convolutions on an FFT grid: analytic transforms of the PSF, of Gaussian components and
of the square spaxel, with sub-pixel positions as phases."""

from __future__ import annotations

import numpy as np
from scipy.special import gamma as gamma_fn
from scipy.special import kv

from ..psf import moffat_alpha


def psf_ft(kind: str, fwhm_pix: float, beta: float, k: np.ndarray) -> np.ndarray:
    """2-D Fourier transform of a unit-flux circular PSF at spatial frequency *k* (cycles/spaxel)."""
    if kind == "gaussian":
        s = fwhm_pix / (2.0 * np.sqrt(2.0 * np.log(2.0)))
        return np.exp(-2.0 * np.pi**2 * s * s * k * k)
    nu = beta - 1.0
    xk = 2.0 * np.pi * float(moffat_alpha(fwhm_pix, beta)) * k
    out = np.ones_like(xk)
    pos = xk > 0
    with np.errstate(over="ignore", under="ignore", invalid="ignore"):
        val = 2.0 ** (1.0 - nu) / gamma_fn(nu) * xk[pos] ** nu * kv(nu, xk[pos])
    out[pos] = np.nan_to_num(val, nan=0.0, posinf=0.0)
    return out


class FourierGrid:
    """An FFT grid around a box of the cube, for exact convolutions and sub-pixel shifts."""

    def __init__(self, box, pad: int):
        x0, x1, y0, y1 = box
        self.box = box
        self.pad = int(pad)
        self.ny = (y1 - y0) + 2 * self.pad
        self.nx = (x1 - x0) + 2 * self.pad
        self.ky = np.fft.fftfreq(self.ny)[:, None]
        self.kx = np.fft.rfftfreq(self.nx)[None, :]
        self.k = np.hypot(self.kx, self.ky)
        self.pixel = np.sinc(self.kx) * np.sinc(self.ky)  # the square spaxel

    def phase(self, x: float, y: float) -> np.ndarray:
        """Shift to cube position (x, y) (0-based)."""
        gx = x - self.box[0] + self.pad
        gy = y - self.box[2] + self.pad
        return np.exp(-2j * np.pi * (self.kx * gx + self.ky * gy))

    def gaussian(self, sigma: float, q: float, theta: float) -> np.ndarray:
        """Transform of a unit-flux elliptical Gaussian (major-axis sigma, axis ratio, angle)."""
        if sigma <= 0:
            return np.ones_like(self.k)
        c, s = np.cos(theta), np.sin(theta)
        smaj, smin = sigma**2, (q * sigma) ** 2
        sxx = smaj * c * c + smin * s * s
        syy = smaj * s * s + smin * c * c
        sxy = (smaj - smin) * c * s
        return np.exp(-2.0 * np.pi**2 * (sxx * self.kx**2 + syy * self.ky**2 + 2 * sxy * self.kx * self.ky))

    def to_image(self, ft: np.ndarray) -> np.ndarray:
        """Inverse transform(s), cropped to the box: ``(..., ny_box, nx_box)``."""
        img = np.fft.irfft2(ft, s=(self.ny, self.nx), axes=(-2, -1))
        p = self.pad
        return img[..., p:self.ny - p, p:self.nx - p]
