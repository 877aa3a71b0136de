"""``ifu-extract demo -o OUTDIR``: the whole chain on the real MUSE cube shipped with mpdaf."""

from __future__ import annotations

from pathlib import Path

import click

from ..steps.run import run_run
from ._options import option_errors, report
from .run import build_request
from .run import cmd as run_cmd
from ._paths import OutputPath

# Abell 478 minicube: no FSF keywords in its header and no isolated star to fit one on; 0.75" is
# the seeing of that MUSE WFM exposure's white light as measured on its compact galaxies, and the
# default of the Galaxy workflow's "PSF FWHM if the cube has no FSF keywords".  Given as the
# fallback (--fwhm-fallback), so that a cube with its own PSF would keep it.
DEMO_FWHM = 0.75


def demo_data() -> tuple[Path, Path]:
    """Paths of the mpdaf wheel's minicube and its MUSELET catalogue."""
    import mpdaf

    base = Path(mpdaf.__file__).parent / "data" / "sdetect"
    return base / "minicube.fits", base / "cat.txt"


@click.command("demo")
@click.option("-o", "--output", default="demo-out", show_default=True, type=OutputPath(file_okay=False),
              help="Output folder.")
@click.option("--threads", type=click.IntRange(min=1, max=256), default=1, show_default=True,
              help="Worker processes.")
def cmd(output, threads):
    """Run detect, mask, extract and the QA report on mpdaf's Abell 478 MUSE cube
    (3681 x 40 x 40, DATA/STAT/DQ), merging its cat.txt with the detections."""
    cube, catalog = demo_data()
    report(f"demo: {cube.name} with {catalog.name} from the installed mpdaf")
    # run's defaults, and the one setting the cube cannot give: a PSF for when it has none (no FSF
    # keywords, no isolated star in the cluster core), the same as the Galaxy workflow's default.
    report(f"demo: ifu-extract run {cube.name} {catalog.name} -o {output} --fwhm-fallback {DEMO_FWHM}")
    with option_errors(run_cmd):
        run_run(build_request(cube, catalog, output,
                              options={"fallback_fwhm": DEMO_FWHM, "threads": threads}))
    index = Path(output) / "index.html"
    report(f"spectra: {output}/sources/  summary: {output}/summary.tsv")
    if index.exists():
        report(f"QA report: open {index.resolve()}")
