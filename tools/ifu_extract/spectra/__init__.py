"""The spectra query and access service: store, ingest, query, retrieve, plot, serve.

Extracted spectra (MPDAF Source files, SDSS ``spec-*`` files) are ingested into a single-file
store (:mod:`.storefile`) with a HEALPix-indexed catalogue (:mod:`.skyindex`); a client with the
NOIRLab Data Lab spectroscopic-service interface (:mod:`.client`) queries and retrieves them,
from the store directly or through the HTTP service (:mod:`.service`).

``grid``        wavelength lattices of contexts (linear/log, air/vacuum), cut-out bounds
``storefile``   the store file: append-only segments, commits, memory-mapped blocks
``ingest``      readers for Source files, SDSS spec files, summary tables; idempotent ingest
``skyindex``    HEALPix cone and polygon queries
``constraint``  the safe constraint dialect (parsed, never pasted into a query)
``access``      query and retrieval (align, cut-out, resampling on request)
``formats``     NumPy, pandas, Table, specutils Spectrum, FITS outputs; wire encoding
``plots``       preview, grid and stacked-image PNGs
``backend``     the service operations on a store, with request limits
``client``      the Data Lab-shaped client (local store or HTTP service)
``service``     the FastAPI application
"""

from .grid import Grid
from .storefile import MASK_BAD, MASK_NODATA, Context, Store, UnknownIds

__all__ = ["Grid", "Store", "Context", "UnknownIds", "MASK_BAD", "MASK_NODATA"]
