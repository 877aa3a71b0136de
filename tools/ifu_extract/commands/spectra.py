"""``ifu-extract spectra ingest|query|get|plot|serve``: the spectra store and service."""

from __future__ import annotations

import logging
import secrets
from pathlib import Path

import click

from ..errors import InputError
from ._options import option_errors, report
from ._paths import OutputPath

log = logging.getLogger("ifu_extract")

TOKEN_ENV = "IFU_EXTRACT_SPECTRA_TOKEN"


def _source_options(func):
    """``--store`` or ``--url`` (+ token): where spectra are read from."""
    options = [
        click.option("--store", type=click.Path(dir_okay=False), default=None,
                     help="Spectra store file (from 'spectra ingest')."),
        click.option("--url", default=None, metavar="URL",
                     help="Spectra service base URL instead of --store, e.g. "
                          "http://127.0.0.1:8000."),
        click.option("--token", default=None, envvar=TOKEN_ENV, show_envvar=True,
                     help="Service token (sent as X-DL-AuthToken) for --url."),
        click.option("--token-file", type=click.Path(dir_okay=False, exists=True), default=None,
                     help="File whose first line is the service token (safer than --token)."),
    ]
    for opt in reversed(options):
        func = opt(func)
    return func


def _token(token, token_file):
    if token_file:
        text = Path(token_file).read_text().strip().splitlines()
        if not text or not text[0].strip():
            raise InputError(token_file, "the token file is empty", "write the token on line 1")
        return text[0].strip()
    return token


def _client(store, url, token, token_file):
    from ..spectra.client import SpecClient

    if (store is None) == (url is None):
        raise click.UsageError("give exactly one of --store and --url")
    if store is not None:
        return SpecClient(store)
    return SpecClient(url=url, token=_token(token, token_file))


def _ids(ids, ids_file):
    out = list(ids)
    if ids_file:
        out += [ln.strip() for ln in Path(ids_file).read_text().splitlines()
                if ln.strip() and not ln.startswith("#")]
    if not out:
        raise click.UsageError("give spectrum ids (arguments or --ids-file)")
    return out


def _ids_options(func):
    func = click.option("--ids-file", type=click.Path(dir_okay=False, exists=True), default=None,
                        help="File of spectrum ids, one per line (e.g. from 'spectra query').")(
        func)
    return click.argument("ids", nargs=-1)(func)


@click.group("spectra")
def group():
    """Store, query, retrieve, align, cut out and preview extracted spectra (Data Lab-style
    spectroscopic service)."""


@group.command("ingest")
@click.argument("sources", nargs=-1, type=click.Path(exists=True))
@click.option("--store", required=True, type=OutputPath(dir_okay=False),
              help="Store file to create or add to (one file; an empty file is a new store).")
@click.option("--source", "source_files", multiple=True, type=click.Path(exists=True, dir_okay=False),
              help="MPDAF Source or SDSS spec-* file (repeatable); SOURCES may also be given "
                   "as arguments, folders searched recursively.")
@click.option("--summary", "summaries", multiple=True, type=click.Path(exists=True, dir_okay=False),
              help="Summary table (summary.tsv of extract, run or merge) whose columns are added "
                   "to the matching spectra (repeatable).")
@click.option("--source-names", "names_file", type=click.Path(exists=True, dir_okay=False),
              default=None,
              help="Text file of the names recorded for the --source files, one per line in "
                   "the same order (default: the file names), e.g. Galaxy's dataset names.")
@click.option("--previous", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Start from a copy of this store (left unchanged); --store is written "
                   "when the ingest is complete.")
@click.option("--context", default=None, metavar="NAME",
              help="Put every spectrum in this context ([a-z0-9_]); default: one context per "
                   "wavelength grid and layout, named after them.")
@click.option("--commit-every", type=click.IntRange(1, 100000), default=200, show_default=True,
              help="Commit after this many files; an interrupted ingest loses at most these.")
def ingest_cmd(sources, store, source_files, summaries, names_file, previous, context,
               commit_every):
    """Ingest MPDAF Source files (every SPE_* spectrum), SDSS spec-* files and summary tables
    (summary.tsv) into STORE.  Folders are searched recursively.  Re-ingesting is idempotent."""
    from ..steps.spectra import run_ingest

    names = None
    if names_file:
        if sources:
            raise click.UsageError("--source-names names --source files: give the files with "
                                   "--source")
        names = Path(names_file).read_text(encoding="utf-8").splitlines()
    if not (sources or source_files or summaries):
        raise click.UsageError("give Source/spec files (SOURCES or --source) or --summary tables")
    with option_errors(extra={"paths": "SOURCES", "names": "--source-names"}):
        rep = run_ingest(store, sources=list(sources) + list(source_files), summaries=summaries,
                         names=names, previous=previous,
                         context=context, commit_every=commit_every)
    for problem in rep.problems:
        click.echo(f"warning: {problem}", err=True)
    report(rep.summary())
    if rep.problems and rep.added + rep.updated + rep.unchanged + rep.objects == 0:
        raise click.ClickException("nothing could be ingested; see the warnings above")


def _region(text):
    if not text:
        return None
    pts = []
    for pair in text.replace(";", " ").split():
        try:
            ra, dec = (float(x) for x in pair.split(","))
        except ValueError:
            raise click.BadParameter(f"{pair!r} is not 'ra,dec'", param_hint="--region") from None
        pts.append((ra, dec))
    if len(pts) < 3:
        raise click.BadParameter("a polygon needs at least 3 vertices", param_hint="--region")
    return pts


@group.command("query")
@_source_options
@click.option("--ra", type=click.FloatRange(0, 360), default=None,
              help="Cone centre right ascension, degrees.")
@click.option("--dec", type=click.FloatRange(-90, 90), default=None,
              help="Cone centre declination, degrees.")
@click.option("--radius", type=click.FloatRange(0, 180), default=None,
              help="Cone radius, degrees.")
@click.option("--region", default=None, metavar="'RA,DEC RA,DEC RA,DEC ...'",
              help="Polygon vertices in degrees (instead of a cone).")
@click.option("--constraint", default=None, metavar="EXPR",
              help="Filter, e.g. \"tag = 'MUSE_TOT' AND z > 0.5 ORDER BY z LIMIT 100\" "
                   "(columns: see 'spectra query --list-columns').")
@click.option("--context", default=None, metavar="NAME", help="Only this context.")
@click.option("--fields", default=None, metavar="COL,COL",
              help="Write a table of these columns instead of ids.")
@click.option("--list-columns", is_flag=True, help="List the contexts and columns, then exit.")
@click.option("-o", "--output", type=OutputPath(dir_okay=False), default=None,
              help="Write ids (one per line) or the table (TSV) here instead of stdout.")
def query_cmd(store, url, token, token_file, ra, dec, radius, region, constraint, context,
              fields, list_columns, output):
    """Select spectra by position (cone or polygon), context and constraint; print their ids."""
    client = _client(store, url, token, token_file)
    if list_columns:
        click.echo(client.list_contexts())
        click.echo(client.catalogs(context))
        return
    if (ra is None) != (dec is None) or (ra is not None and radius is None):
        raise click.UsageError("a cone needs --ra, --dec and --radius")
    res = client.query(ra=ra, dec=dec, size=radius, region=_region(region),
                       constraint=constraint, context=context, fields=fields, out=output)
    if output:
        report(f"wrote {output}")
    elif fields:
        click.echo("\t".join(res.colnames))
        for row in res:
            click.echo("\t".join(str(v) for v in row))
    else:
        for i in res:
            click.echo(i)


@group.command("get")
@_source_options
@_ids_options
@click.option("--format", "fmt", type=click.Choice(["fits", "numpy", "tsv"]), default="fits",
              show_default=True,
              help="fits/numpy: one file per spectrum in the output folder; tsv: one table "
                   "(specid, wavelength, planes) in the output file.")
@click.option("--align", is_flag=True,
              help="Pad all spectra to one channel range of the context grid.")
@click.option("--cutout", default=None, metavar="W0-W1",
              help="Keep channels whose centre lies in W0-W1 Angstrom (implies --align).")
@click.option("--resample", is_flag=True,
              help="Allow interpolation onto the first spectrum's grid when contexts differ.")
@click.option("--values", default=None, metavar="PLANES",
              help="Planes to write, e.g. flux,ivar (default: all).")
@click.option("-o", "--output", required=True, type=OutputPath(),
              help="Output folder (fits, numpy) or file (tsv).")
def get_cmd(store, url, token, token_file, ids, ids_file, fmt, align, cutout, resample, values,
            output):
    """Retrieve spectra IDS (as 'context:ID:TAG') aligned, cut out or as stored."""
    client = _client(store, url, token, token_file)
    ids = _ids(ids, ids_file)
    if fmt == "tsv":
        from ..spectra.formats import write_tsv

        data = client.getSpec(ids, fmt="numpy", align=align, cutout=cutout, resample=resample,
                              values=values)
        write_tsv(ids, data, output)
    else:
        client.getSpec(ids, fmt=fmt, out=output, align=align, cutout=cutout, resample=resample,
                       values=values)
    report(f"wrote {len(ids)} spectra to {output}")


@group.command("plot")
@_source_options
@_ids_options
@click.option("--kind", type=click.Choice(["preview", "grid", "stacked"]), default="preview",
              show_default=True,
              help="preview: the first id; grid: a page of previews; stacked: one row per id.")
@click.option("--nx", type=click.IntRange(1, 10), default=5, show_default=True,
              help="Grid columns.")
@click.option("--ny", type=click.IntRange(1, 10), default=5, show_default=True, help="Grid rows.")
@click.option("--page", type=click.IntRange(0, None), default=0, show_default=True,
              help="Grid page (0 first).")
@click.option("--yflip", is_flag=True, help="Stacked image: first id at the top.")
@click.option("--align", is_flag=True, help="Grid: align the spectra first.")
@click.option("--cutout", default=None, metavar="W0-W1",
              help="Grid/stacked: wavelength window, Angstrom.")
@click.option("-o", "--output", required=True, type=OutputPath(dir_okay=False),
              help="PNG file to write.")
def plot_cmd(store, url, token, token_file, ids, ids_file, kind, nx, ny, page, yflip, align,
             cutout, output):
    """Draw a preview, a grid of previews or a stacked image (ids in the order given)."""
    from ..steps.spectra import run_plot

    client = _client(store, url, token, token_file)
    run_plot(client, _ids(ids, ids_file), output, kind=kind, nx=nx, ny=ny, page=page, yflip=yflip,
             align=align, cutout=cutout)
    report(f"wrote {output}")


@group.command("serve")
@click.option("--store", required=True, type=click.Path(dir_okay=False, exists=True),
              help="Spectra store file to serve.")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on (loopback by default).")
@click.option("--port", type=click.IntRange(1, 65535), default=8000, show_default=True,
              help="TCP port.")
@click.option("--token", default=None, envvar=TOKEN_ENV, show_envvar=True,
              help="Token clients must send (X-DL-AuthToken); a random one is made and printed "
                   "when neither this nor --token-file is given.")
@click.option("--token-file", type=click.Path(dir_okay=False, exists=True), default=None,
              help="File whose first line is the token.")
@click.option("--max-ids", type=click.IntRange(1, 10_000_000), default=100_000,
              show_default=True, help="Most spectrum ids in one request.")
@click.option("--max-rows", type=click.IntRange(1, 100_000_000), default=2_000_000,
              show_default=True, help="Most rows a query may return.")
@click.option("--max-body-bytes", type=click.IntRange(1024, 1 << 31), default=16 << 20,
              show_default=True, help="Largest request body.")
@click.option("--max-values", type=click.IntRange(1000, 1 << 34), default=64 << 20,
              show_default=True,
              help="Most 4-byte values (spectra x planes x channels, plus 2 per channel for a "
                   "Data Lab .npy answer's wavelength) in one getSpec answer: 256 MiB.")
@click.option("--max-stack-rows", type=click.IntRange(1, 1_000_000), default=4096,
              show_default=True, help="Most spectra (image rows) in one stacked image.")
@click.option("--anonymous/--no-anonymous", default=False, show_default=True,
              help="Let requests without the token (or with Data Lab's anonymous token) read "
                   "the data endpoints, rate-limited; the NOIRLab Data Lab client needs it for "
                   "preview(), which it sends without a token.")
@click.option("--anonymous-rate", type=click.FloatRange(0, 10_000), default=20.0,
              show_default=True,
              help="Anonymous requests per second per client address (bursts of twice as "
                   "many; 0: unlimited).")
@click.option("--access-log", is_flag=True, help="Log every request to stderr.")
def serve_cmd(store, host, port, token, token_file, max_ids, max_rows, max_body_bytes,
              max_values, max_stack_rows, anonymous, anonymous_rate, access_log):
    """Serve STORE over HTTP (FastAPI + uvicorn): the JSON API of the project's client and the
    NOIRLab Data Lab wire protocol of astro-datalab's ``dl.specClient``: /query /getSpec
    /listSpan /preview /plotGrid /gridPlot /stackedImage /contexts /catalogs /validate
    /profiles /available; schema at /openapi.json."""
    from ..spectra.backend import Limits
    from ..spectra.datalab import is_datalab_token
    from ..spectra.service import require_service_extra, serve

    require_service_extra()
    tok = _token(token, token_file)
    if not tok:
        # Data Lab's token shape (user.uid.gid.secret), so that a logged-in Data Lab client
        # can send it too (docs/spectra-service.md); the random part has no '.'
        tok = "spectra.0.0.$1$" + secrets.token_urlsafe(24)
        click.echo(f"token: {tok}", err=True)
    elif not is_datalab_token(tok):
        report("note: the token is not of Data Lab's shape user.uid.gid.secret, so the Data Lab "
               "client cannot send it (only anonymous access would work for it)")
    limits = Limits(max_ids=max_ids, max_rows=max_rows, max_words=max_values,
                    max_body=max_body_bytes, max_stack_rows=max_stack_rows)
    access = "anonymous read access" if anonymous else "token only"
    report(f"serving {store} on http://{host}:{port} ({access}; schema at /openapi.json)")
    serve(store, token=tok, host=host, port=port, limits=limits, access_log=access_log,
          anonymous=anonymous, anonymous_rate=anonymous_rate)
