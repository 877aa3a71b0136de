"""ifu-extract: clean 1D spectra of every object in an integral-field datacube.

The package is a library first: each microtool of the ``ifu-extract`` command line is a thin
layer over a function here.  Core modules:

``errors``    user errors (one line) and per-object statuses
``cubeio``    datacube layouts (MUSE, MaNGA, SCI/ERR, primary-only), windows, units
``catalog``   catalogue formats (AutoSpec, MUSELET, CSV, TSV, ECSV, FITS)
``wcsutil``   celestial/spectral WCS helpers, pixel scales, cut-out WCS
``fitsout``   atomic writes, provenance headers, deterministic dates
``synth``     synthetic cubes with known truth (tests, benchmarks, test-data)
"""

import os
from importlib.metadata import PackageNotFoundError, version

# Our linear algebra is many small products (one object at a time) and we parallelise over
# objects with processes; a multi-threaded BLAS only adds contention (40x slower measured on a
# loaded 2-core machine).  Applies when this package is imported before numpy; the extraction
# workers also limit the BLAS pool at run time (threadpoolctl).
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

try:
    __version__ = version("ifu-extract")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0"

__all__ = ["__version__"]
