"""MUSE pixel tables: read, select, decode, mask, self-calibrate and plot, at any size.

A pixel table has one row per detector pixel (``xpos, ypos, lambda, data, dq, stat,
origin``): about 3x10^8 rows and 8-9 GB for one exposure.  This subpackage offers MPDAF's
``PixTable`` feature set with the same results, but never loads a table: files are
memory-mapped and processed in chunks of rows on all cores, columns stay float32/int32, and
outputs are streamed to disk.

Modules
-------
``header``    ``HIERARCH ESO DRS MUSE PIXTABLE`` keywords, slice numbering
``reader``    both layouts (images, binary table), memory-mapped chunked access
``writer``    streaming pixel-table and FITS writers
``origin``    origin codes <-> IFU, slice, detector x/y
``sky``       MPDAF's sky coordinates and apertures; fast exact mask-image look-up
``select``    extraction criteria (sky, wavelength, IFU, slice, stack, pixels, exposures)
``extract``   new pixel tables and decoded-origin tables from a selection
``maskcol``   per-row object mask (MPDAF ``mask_column`` / ``PixTableMask``)
``detimage``  detector and wavelength images of one IFU
``selfcal``   slice self-calibration for sparse fields (MPDAF 2.x ``selfcalibrate``)
``plots``     quick-look PNGs
``info``      header summary (MPDAF ``info``)
``synth``     synthetic tables of any size, both layouts, with known truth
"""

from .extract import extract, write_origins
from .header import KEYWORD, COLUMNS
from .reader import PixTable, open_pixtable
from .select import Selection, run_selection
from .sky import SkyRegion

__all__ = ["PixTable", "open_pixtable", "Selection", "SkyRegion", "run_selection", "extract",
           "write_origins", "KEYWORD", "COLUMNS"]
