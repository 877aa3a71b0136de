"""ifu-extract: clean 1D spectra of every object in an integral-field datacube.

The package is a library first, in three layers: the science modules (arrays and files in,
results out), the steps (:mod:`ifu_extract.steps`: one ``run_<verb>`` per verb, owning its file
I/O) and the command line (:mod:`ifu_extract.cli`, :mod:`ifu_extract.commands`: options in, one
step called, a report out).  One home per concept:

``errors``       user errors (one line), parameter errors, per-object statuses
``cubeio``       datacube layouts (MUSE, MaNGA, SCI/ERR, primary-only), windows, units
``catalog``      catalogue formats (AutoSpec, MUSELET, CSV, TSV, ECSV, FITS)
``wcsutil``      celestial/spectral WCS helpers, pixel scales, cut-out WCS
``box``          the stamp geometry (a box of cube pixels)
``fitsout``      output files: atomic writes, provenance headers, deterministic dates
``fitsio``       FITS bytes: cards, checksums, the streaming cube writer, file-kind sniffing
``sourcefile``   the per-object Source files (MPDAF layout): write, read, update
``summary``      the summary table (``summary.tsv``)
``psf``          the PSF policy (given > header > star > fitted) and its named defaults
``psfmodel``     the PSF model and profiles; ``psffit`` the fits on stars
``parallel``     worker pools that die with their parent
``synth``        synthetic cubes with known truth (tests, benchmarks, test-data; never imported
                 by the library)
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
