"""ifu-extract: clean 1D spectra of every object in an integral-field datacube.

The package is a library first: each microtool of the ``ifu-extract`` command line is a thin
layer over a function here.  Core modules:

``errors``    user errors (one line) and per-object statuses
``cubeio``    datacube layouts (MUSE, MaNGA, SCI/ERR, primary-only), windows, units
``catalog``   catalogue formats (AutoSpec, MUSELET, CSV, TSV, ECSV, FITS)
``wcsutil``   celestial/spectral WCS helpers, pixel scales, cut-out WCS
``fitsout``   atomic writes, provenance headers, deterministic dates
``fitsio``    FITS bytes: cards, checksums, the streaming cube writer, file-kind sniffing
``sourcefile`` the per-object Source files (MPDAF layout): write, read, update
``psf``       the PSF policy (given > header > star > fitted) and its named defaults
``synth``     synthetic cubes with known truth (tests, benchmarks, test-data)
"""

from importlib.metadata import PackageNotFoundError, version

# Importing the package changes nothing in the process: the command line makes BLAS
# single-threaded when it starts (ifu_extract.cli.main), worker processes when they start
# (ifu_extract.parallel.worker_init, threadpoolctl).

try:
    __version__ = version("ifu-extract")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0"

__all__ = ["__version__"]
