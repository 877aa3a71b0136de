"""Images from cubes (white light, bands, continuum-subtracted narrow bands) and image I/O.

An :class:`Image` is ``(ny, nx)`` float32 data, its variance (or None), and a celestial WCS.
Band images are the mean flux density over the channels of the band (the MPDAF white-light
convention), NaN-aware: each spaxel averages its finite channels, and its variance is
``sum(var) / n**2`` over the same channels.  Cubes are read in blocks of planes, so memory stays
bounded whatever the cube size.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS

from .cubeio import Cube, open_cube, open_fits
from .errors import InputError, ParameterError
from .fitsio import file_head, is_tiff
from .fitsout import add_provenance, write_hdulist
from .wcsutil import celestial_from_header

__all__ = ["Image", "band_image", "narrowband_image", "cube_image", "read_image", "write_image",
           "is_cube_file", "white_for_cube"]


@dataclass
class Image:
    """A 2-D image with variance and celestial WCS.

    Attributes
    ----------
    data : numpy.ndarray
        ``(ny, nx)`` float32.
    var : numpy.ndarray or None
        Variance, same shape.
    wcs : astropy.wcs.WCS or None
        Celestial WCS (None for a TIFF or a FITS image without WCS).
    unit : str
        Flux unit string ('' when unknown).
    meta : dict
        Header cards to record (band limits, method...).
    """

    data: np.ndarray
    var: np.ndarray | None
    wcs: WCS | None
    unit: str = ""
    meta: dict = field(default_factory=dict)

    @property
    def shape(self):
        return self.data.shape


#: Bytes of float32 data per block of whole planes in :func:`_accumulate` (as
#: :meth:`Cube.iter_planes`): a block and its sums stay in the CPU's last-level cache.
_BLOCK_BYTES = 4e6


def _accumulate(cube: Cube, z0: int, z1: int):
    """Sums over channels ``[z0, z1)`` of the finite data, of their variance, and their count.

    A voxel counts when its data (and variance, when the cube has one) are finite.

    Parameters
    ----------
    cube : Cube
    z0, z1 : int
        Half-open channel range.

    Returns
    -------
    total : numpy.ndarray
        ``(ny, nx)`` float64 sum of the data.
    vsum : numpy.ndarray or None
        ``(ny, nx)`` float64 sum of the variance (None without variance).
    count : numpy.ndarray
        ``(ny, nx)`` int64 number of voxels summed.
    """
    npix = cube.ny * cube.nx
    total = np.zeros(npix, dtype=np.float64)
    vsum = np.zeros(npix, dtype=np.float64) if cube.has_var else None
    count = np.zeros(npix, dtype=np.int64)
    part = np.empty(npix, dtype=np.float64)
    vpart = np.empty(npix, dtype=np.float64) if cube.has_var else None
    # Blocks as Cube.iter_planes reads them (same grouping of the float64 sums, so the same
    # image to the bit), but in reused buffers: no fresh pages to fault in for every block.
    block = max(1, int(_BLOCK_BYTES // (4 * npix)))
    for _, data, var in cube.window_blocks(0, cube.nx, 0, cube.ny, z0, z1, block=block):
        n = data.shape[0]
        d = data.reshape(n, npix)
        v = None if var is None else var.reshape(n, npix)
        # Sum everything first (float64, no mask, no temporary): a spaxel whose sum is finite
        # had only finite voxels, which is nearly every spaxel of nearly every block.
        np.add.reduce(d, axis=0, dtype=np.float64, out=part)
        finite = np.isfinite(part)
        if v is not None:
            np.add.reduce(v, axis=0, dtype=np.float64, out=vpart)
            finite &= np.isfinite(vpart)
        if not finite.all():
            # Redo the few spaxels holding a NaN or infinity with a mask, on their columns only.
            cols = np.flatnonzero(~finite)
            sub = d[:, cols]
            good = np.isfinite(sub)
            if v is not None:
                vsub = v[:, cols]
                good &= np.isfinite(vsub)
                vpart[cols] = np.add.reduce(vsub, axis=0, dtype=np.float64, where=good)
            part[cols] = np.add.reduce(sub, axis=0, dtype=np.float64, where=good)
            count[cols] -= n - np.count_nonzero(good, axis=0)
        total += part
        if v is not None:
            vsum += vpart
        count += n
    shape = (cube.ny, cube.nx)
    return total.reshape(shape), (None if vsum is None else vsum.reshape(shape)), count.reshape(shape)


def _mean_band(cube: Cube, z0: int, z1: int):
    total, vsum, count = _accumulate(cube, z0, z1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(count > 0, total / count, np.nan)
        var = None if vsum is None else np.where(count > 0, vsum / count.astype(float) ** 2, np.nan)
    return mean, var


def band_image(cube: Cube, wave_range: tuple[float, float] | None = None) -> Image:
    """White-light image (whole cube) or the mean over a wavelength band.

    Parameters
    ----------
    cube : Cube
    wave_range : (float, float), optional
        Band limits, Angstrom; channels whose centres lie inside are used.

    Returns
    -------
    Image
    """
    z0, z1 = cube.channel_range(*(wave_range or (None, None)))
    mean, var = _mean_band(cube, z0, z1)
    if not np.isfinite(mean).any():
        if cube.var_problem and "negative" in cube.var_problem:
            # Voxels with a negative variance are ignored: say that this is why nothing is left.
            name = cube.hdul[cube.var_ext].name or str(cube.var_ext)
            raise ParameterError(cube.path, f"has no usable voxel in the requested band: the variance "
                                 f"extension {name} is negative where the data are finite",
                                 "check the variance, or name another extension with {var_ext}",
                                 params=("var_ext",))
        raise ParameterError(cube.path, "has no finite value in the requested band",
                             "choose another {wave_range} or check the DQ policy", params=("wave_range",))
    meta = {"WAVEMIN": (float(cube.wave[z0]), "[Angstrom] first channel used"),
            "WAVEMAX": (float(cube.wave[z1 - 1]), "[Angstrom] last channel used"),
            "IMGTYPE": ("white" if wave_range is None else "band", "how the image was made")}
    return Image(mean.astype(np.float32), None if var is None else var.astype(np.float32),
                 cube.wcs, cube.unit_string, meta)


def narrowband_image(cube: Cube, centre: float, width: float, *, side_width: float | None = None,
                     gap: float = 0.0) -> Image:
    """Continuum-subtracted narrow-band image around a line.

    The continuum is the mean of two side bands of width *side_width* (default *width*) placed
    *gap* Angstrom beyond each edge of the line band; where only one side band is inside the
    cube, that one is used.

    Parameters
    ----------
    cube : Cube
    centre, width : float
        Line band centre and full width, Angstrom.
    side_width, gap : float
        Side-band width and gap, Angstrom.
    """
    if width <= 0:
        raise ParameterError("{width}", f"{width} is not a positive width", "give a width in Angstrom > 0",
                             params=("width",))
    sw = width if side_width is None else side_width
    lo, hi = centre - width / 2.0, centre + width / 2.0
    if hi < cube.wave[0] or lo > cube.wave[-1]:
        raise InputError(cube.path, f"line band {lo:.1f}-{hi:.1f} Angstrom is outside the cube "
                         f"({cube.wave[0]:.1f}-{cube.wave[-1]:.1f})", "choose --line inside the cube")
    line, line_var = _mean_band(cube, *cube.channel_range(lo, hi))
    sides = []
    for a, b in ((lo - gap - sw, lo - gap), (hi + gap, hi + gap + sw)):
        if b >= cube.wave[0] and a <= cube.wave[-1]:
            try:
                sides.append(_mean_band(cube, *cube.channel_range(a, b)))
            except InputError:
                continue
    if not sides:
        raise InputError(cube.path, "no continuum side band fits inside the cube",
                         "use a smaller --width or --side-width")
    cont = np.mean([s[0] for s in sides], axis=0)
    data = line - cont
    var = None
    if line_var is not None:
        var = line_var + np.sum([s[1] for s in sides], axis=0) / len(sides) ** 2
    meta = {"IMGTYPE": ("narrowband", "continuum-subtracted narrow band"),
            "LINEWAVE": (float(centre), "[Angstrom] line band centre"),
            "LINEWID": (float(width), "[Angstrom] line band width"),
            "SIDEWID": (float(sw), "[Angstrom] continuum side-band width"),
            "SIDEGAP": (float(gap), "[Angstrom] gap between line and side bands"),
            "NSIDES": (len(sides), "side bands used for the continuum")}
    return Image(data.astype(np.float32), None if var is None else var.astype(np.float32),
                 cube.wcs, cube.unit_string, meta)


def write_image(image: Image, path, tool: str, inputs: dict | None = None,
                params: dict | None = None, identity: dict | None = None) -> Path:
    """Write an image as PRIMARY + DATA (+ STAT) with the celestial WCS (MPDAF Image layout).

    *identity* (:func:`~ifu_extract.identity.cube_identity` of the cube it was made from) goes
    in the primary header.
    """
    hdr = fits.Header() if image.wcs is None else image.wcs.to_header(relax=True)
    if image.unit:
        hdr["BUNIT"] = image.unit
    for key, value in image.meta.items():
        hdr[key] = value
    prim = fits.PrimaryHDU()
    add_provenance(prim.header, tool, inputs, params)
    for key, card in (identity or {}).items():
        prim.header[key] = card
    hdus = [prim, fits.ImageHDU(image.data, hdr, name="DATA")]
    if image.var is not None:
        hdus.append(fits.ImageHDU(image.var, hdr, name="STAT"))
    return write_hdulist(fits.HDUList(hdus), path)


def is_cube_file(path) -> bool:
    """True when *path* is a FITS file holding a 3-D image HDU."""
    try:
        with fits.open(path) as hdul:
            return any(h.is_image and h.header.get("NAXIS", 0) == 3 for h in hdul)
    except Exception:  # noqa: BLE001 - not FITS: the caller decides what it is
        return False


def read_image(path, *, ext=None, var_ext=None) -> Image:
    """Read a 2-D image from FITS (with WCS and variance when present) or TIFF.

    Parameters
    ----------
    path : str or os.PathLike
    ext : str or int, optional
        Image extension (default: DATA, SCI, FLUX, else the first 2-D HDU).
    var_ext : str or int, optional
        Variance extension (default: STAT or VAR; ERR is squared; IVAR inverted).
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "no such file", "check the path")
    if is_tiff(file_head(path)):
        return _read_tiff(path)
    hdul = open_fits(path, "image")
    with hdul:
        names = [h.name for h in hdul]
        if ext is None:
            idx = next((names.index(n) for n in ("DATA", "SCI", "FLUX", "IMAGE")
                        if n in names and hdul[names.index(n)].header.get("NAXIS") == 2), None)
            if idx is None:
                idx = next((i for i, h in enumerate(hdul) if h.is_image and h.header.get("NAXIS") == 2),
                           None)
            if idx is None:
                raise InputError(path, "has no 2-D image extension", "give an image, or a cube")
        else:
            idx = int(ext) if str(ext).isdigit() else (names.index(str(ext).upper())
                                                      if str(ext).upper() in names else None)
            if idx is None or idx >= len(hdul) or hdul[idx].header.get("NAXIS") != 2:
                raise InputError(path, f"extension {ext!r} is not a 2-D image", "choose another extension")
        hdr = hdul[idx].header
        data = np.asarray(hdul[idx].data, dtype=np.float32)
        var = None
        kind = None
        vname = var_ext
        if vname is None:
            vname = next((n for n in ("STAT", "VAR", "IVAR", "ERR") if n in names
                          and hdul[names.index(n)].header.get("NAXIS") == 2), None)
        if vname is not None:
            if str(vname).isdigit() and int(vname) < len(hdul):
                vidx = int(vname)
            elif str(vname).upper() in names:
                vidx = names.index(str(vname).upper())
            else:
                listing = ", ".join(f"{i}:{n or '-'}" for i, n in enumerate(names))
                raise ParameterError(path, f"has no extension {vname!r} for the variance (extensions: "
                                     f"{listing})", "choose one with {var_ext}", params=("var_ext",))
            raw = np.asarray(hdul[vidx].data, dtype=np.float32)
            if raw.shape == data.shape:
                kind = hdul[vidx].name.upper()
                if kind == "IVAR":
                    with np.errstate(divide="ignore"):
                        var = np.where(raw > 0, 1.0 / raw, np.nan).astype(np.float32)
                elif kind == "ERR":
                    var = raw**2
                else:
                    var = raw
        merged = hdul[0].header.copy() if idx != 0 else fits.Header()
        merged.update(hdr)
        merged["NAXIS"] = 2
        wcs = celestial_from_header(merged)
        unit = str(hdr.get("BUNIT", ""))
    return Image(data, var, wcs, unit, {})


def _read_tiff(path: Path) -> Image:
    import tifffile

    try:
        arr = tifffile.imread(path)
    except Exception as exc:  # noqa: BLE001 - tifffile raises many kinds
        raise InputError(path, f"cannot be read as TIFF ({exc})", "give a single-channel TIFF or FITS") from None
    arr = np.squeeze(np.asarray(arr))
    if arr.ndim != 2:
        raise InputError(path, f"is a {arr.ndim}-D TIFF (shape {arr.shape}), not a single-channel image",
                         "give a single-channel 2-D image")
    return Image(arr.astype(np.float32), None, None, "", {})


def cube_image(cube: Cube, *, wave_range=None, line=None, width=10.0, side_width=None,
               gap=0.0) -> Image:
    """The image the ``image`` step makes of *cube*: the continuum-subtracted narrow band
    around *line* (:func:`narrowband_image`), else the mean over *wave_range* or the whole
    cube (:func:`band_image`).  Wavelengths in Angstrom; *line* and *wave_range* exclude each
    other."""
    if line is not None:
        if wave_range:
            raise ParameterError(None, "{line} and {wave_range} are exclusive", params=("line", "wave_range"))
        return narrowband_image(cube, line, width, side_width=side_width, gap=gap)
    return band_image(cube, tuple(wave_range) if wave_range else None)


def image_from_input(path, *, wave_range=None, line=None, width=None, side_width=None, gap=0.0,
                     cube_kwargs=None) -> tuple[Image, bool]:
    """An image from a cube (collapsed as in ``image``) or an image file; and whether it was a cube."""
    if is_cube_file(path):
        with open_cube(path, **(cube_kwargs or {})) as cube:
            # The line band wins over a wavelength range here (detect's rule).
            return cube_image(cube, wave_range=None if line is not None else wave_range, line=line,
                              width=width, side_width=side_width, gap=gap), True
    return read_image(path), False


def white_for_cube(cube: Cube, path=None, wave_range=None) -> Image:
    """The white-light (or band) image of *cube*: read from *path* when given, else computed.

    A given image must be on the cube's spatial grid (e.g. the output of ``ifu-extract image``
    on that cube), which saves a pass over the whole cube in ``mask`` and ``extract``.
    """
    from .wcsutil import same_grid

    if path is None:
        return band_image(cube, wave_range)
    img = read_image(path)
    if img.wcs is None or not same_grid(img.wcs, img.shape, cube.wcs, (cube.ny, cube.nx)):
        raise InputError(path, "is not on the spatial grid of the cube",
                         "give the output of 'ifu-extract image' on the same cube, or leave --white out")
    from .identity import check_product

    with fits.open(path) as hdul:  # our images record their cube; others are taken on trust
        hdr = next((h.header for h in hdul if "IFXCNAX" in h.header), None)
    if hdr is not None:
        check_product(hdr, path, cube, cube.path, what="white-light image")
    return img
