"""Write the small spectra-service inputs in test-data/ (for the Galaxy tool tests).

    .venv/bin/python test-data/make_spectra_data.py

Files (all seeded, dates fixed, so reruns give the same bytes except mpdaf's own layout):

``spectra_source_101.fits``, ``spectra_source_102.fits``  MPDAF Sources, MUSE_TOT + MUSE_PSF,
    60 channels of the MUSE air grid from 4750 Angstrom
``spectra_source_501.fits``  a Source on the same grid, 30 channels from 4800 Angstrom
``spectra_spec-0266-51630-0010.fits``  an SDSS spec file (SDSS data model), 80 channels
``spectra_summary.tsv``  a summary table (ID STATUS MAG)
``spectra_store.ifxs``  a store holding all of the above
``spectra_ids.txt``  two spectrum ids of that store, one per line
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from astropy.io import fits

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

from spectra_helpers import MUSE_CTX, MUSE_STEP, MUSE_START, make_sdss, make_source, \
    make_summary  # noqa: E402

from ifu_extract.spectra.ingest import ingest  # noqa: E402


def _fix_date(path):
    with fits.open(path) as h:
        h[0].header["DATE"] = "2026-01-01T00:00:00"
        h.writeto(path, overwrite=True)


def main():
    os.environ["SOURCE_DATE_EPOCH"] = "1767225600"
    files = []
    for i, oid in enumerate((101, 102)):
        p = HERE / f"spectra_source_{oid}.fits"
        make_source(p, oid, 150.0 + 0.01 * i, 2.0, 0.3 + 0.2 * i, n=60, seed=i,
                    tags=("MUSE_TOT", "MUSE_PSF"), nan_at=(5,) if i == 0 else ())
        _fix_date(p)
        files.append(p)
    p = HERE / "spectra_source_501.fits"
    make_source(p, 501, 150.05, 2.01, 0.5, n=30, seed=7, tags=("MUSE_TOT",),
                start=MUSE_START + 40 * MUSE_STEP)
    _fix_date(p)
    files.append(p)
    p = HERE / "spectra_spec-0266-51630-0010.fits"
    make_sdss(p, 266, 51630, 10, 150.1, 2.05, 0.12, n=80, seed=3)
    files.append(p)
    files.append(make_summary(HERE / "spectra_summary.tsv", [
        {"ID": 101, "STATUS": "ok", "MAG": 21.3}, {"ID": 102, "STATUS": "fallback", "MAG": 22.1},
        {"ID": 501, "STATUS": "ok", "MAG": 23.0}]))
    store = HERE / "spectra_store.ifxs"
    store.unlink(missing_ok=True)
    rep = ingest(files, store)
    assert not rep.problems, rep.problems
    (HERE / "spectra_ids.txt").write_text(f"{MUSE_CTX}:101:MUSE_TOT\n{MUSE_CTX}:501:MUSE_TOT\n")
    print(rep.summary())


if __name__ == "__main__":
    main()
