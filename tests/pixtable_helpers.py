"""Small synthetic pixel tables shared by the pixtable tests (generated once per session)."""

from __future__ import annotations

import atexit
import shutil
import tempfile
import warnings
from pathlib import Path

import numpy as np

from ifu_extract.pixtable.synth import SynthSource, SynthSpec, mask_image_hdulist, write_pixtable

_DIR = Path(tempfile.mkdtemp(prefix="ifx-pixtable-tests-"))
atexit.register(shutil.rmtree, _DIR, ignore_errors=True)
_CACHE: dict = {}

RA0, DEC0 = 53.1625, -27.7914
COSD = np.cos(np.deg2rad(DEC0))


def offset(dx: float, dy: float) -> tuple[float, float]:
    """RA, Dec (deg) of an offset (arcsec east, arcsec north) from the field centre."""
    return RA0 + dx / 3600.0 / COSD, DEC0 + dy / 3600.0


SOURCES = tuple(SynthSource(*offset(dx, dy), peak=60.0)
                for dx, dy in [(0.0, 0.3), (6.0, 2.2), (-12.0, -3.1), (21.0, 1.4)])


def table(nrows=120_000, *, layout="image", convention="positioned", n_ifu=4, n_exp=1,
          seed=7, **kw) -> tuple[Path, object, SynthSpec]:
    """Path, geometry and spec of a cached synthetic table."""
    key = (nrows, layout, convention, n_ifu, n_exp, seed,
           repr(sorted((k, v.tobytes() if isinstance(v, np.ndarray) else v)
                       for k, v in kw.items())))
    if key not in _CACHE:
        spec = SynthSpec(nrows=nrows, n_ifu=n_ifu, n_exp=n_exp, convention=convention,
                         sources=kw.pop("sources", SOURCES), seed=seed, **kw)
        path = _DIR / f"pt_{len(_CACHE)}_{layout}_{convention}.fits"
        geo = write_pixtable(path, spec, layout=layout, threads=2)
        _CACHE[key] = (path, geo, spec)
    return _CACHE[key]


def mask_file(name, spec, **kw) -> Path:
    """A source mask image for *spec* written under the session folder."""
    path = _DIR / name
    if not path.exists():
        mask_image_hdulist(spec, **kw).writeto(path)
    return path


def mpdaf_pixtable(path):
    """MPDAF's PixTable of *path*, its warnings silenced."""
    from mpdaf.drs import PixTable as MPixTable

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return MPixTable(str(path))


def selected_rows(result) -> np.ndarray:
    """Global row numbers of a SelectionResult."""
    parts = [c.a + (np.arange(c.b - c.a) if c.rows() is None else c.rows())
             for c in result.chunks if c.count]
    return np.concatenate(parts) if parts else np.array([], dtype=np.int64)


def one_line_error(res, *needles):
    """The CLI result is one ``ifu-extract: error:`` line (exit 1) holding every needle."""
    assert res.exit_code == 1, res.stderr
    assert len(res.err_lines) == 1, res.stderr
    assert "Traceback" not in res.stderr and res.err_lines[0].startswith("ifu-extract: error:")
    for n in needles:
        assert n in res.stderr, res.stderr


def rewrite(src, dst, edit):
    """Copy FITS file *src* to *dst* with *edit(hdul)* applied; returns *dst*."""
    from astropy.io import fits

    with fits.open(src) as hdul:
        edit(hdul)
        hdul.writeto(dst)
    return dst
