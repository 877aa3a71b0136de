"""A client with the NOIRLab Data Lab spectroscopic-service interface.

It works on a local store file or against the HTTP service, with the same results::

    from ifu_extract.spectra.client import SpecClient
    spec = SpecClient("spectra.ifxs")                       # local store
    spec = SpecClient(url="http://127.0.0.1:8000", token=T)  # the service
    ids = spec.query(150.0, 2.0, 0.1, constraint="tag = 'MUSE_TOT' AND z > 0.5 ORDER BY z")
    data = spec.getSpec(ids, fmt="numpy", cutout="6500-7200")
    png = spec.stackedImage(ids, yflip=True)

Module-level functions (``query``, ``getSpec``, ...) use a default client made on first use
from ``IFU_EXTRACT_SPECTRA_STORE`` or ``IFU_EXTRACT_SPECTRA_URL`` (+ ``IFU_EXTRACT_SPECTRA_TOKEN``):
importing this module opens nothing.  Constraints are sent as text and parsed into a safe
expression tree where they are evaluated; they are never pasted into a database query.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from astropy.table import Table

from ..catalog import write_catalog
from ..errors import InputError
from ..fitsout import atomic_path, ensure_dir, write_hdulist
from . import formats
from .access import SpectraBatch
from .backend import Limits, LocalBackend
from .storefile import UnknownIds

__all__ = ["SpecClient", "HTTPBackend", "AuthError", "ServiceError", "getClient", "isAlive",
           "query", "getSpec", "preview", "plotGrid", "getGridPlot", "stackedImage",
           "list_contexts", "catalogs", "to_pandas", "to_Table", "to_Spectrum", "to_Spectrum1D"]

TOKEN_HEADER = "X-DL-AuthToken"


class AuthError(InputError):
    """The service refused the token (HTTP 401)."""


class ServiceError(InputError):
    """The service failed (HTTP 5xx or an unreadable answer)."""


class HTTPBackend:
    """The service operations over HTTP (same interface as :class:`~.backend.LocalBackend`).

    Parameters
    ----------
    url : str
        Service base URL, e.g. ``http://127.0.0.1:8000``.
    token : str
        Sent in the ``X-DL-AuthToken`` header.
    timeout : float
        Seconds per request.
    """

    def __init__(self, url: str, token: str | None = None, timeout: float = 120.0):
        import httpx

        self.url = url.rstrip("/")
        self.token = token
        headers = {TOKEN_HEADER: token} if token else {}
        self._http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout)

    def close(self):
        self._http.close()

    def _check(self, r):
        if r.status_code == 200:
            return r
        try:
            body = r.json()
            detail = body.get("detail", r.text)
        except ValueError:
            body, detail = {}, r.text
        if isinstance(detail, list):  # pydantic validation errors
            detail = "; ".join(f"{'.'.join(str(x) for x in d.get('loc', []))}: {d.get('msg')}"
                               for d in detail)
        if r.status_code == 401:
            raise AuthError(self.url, f"the service refused the request ({detail})",
                            "give the service token (token=..., IFU_EXTRACT_SPECTRA_TOKEN)")
        if r.status_code == 404 and isinstance(body, dict) and "unknown" in body:
            raise UnknownIds(body["unknown"])
        if r.status_code in (400, 404, 413, 422):
            raise InputError(None, str(detail))
        raise ServiceError(self.url, f"service error {r.status_code}: {str(detail)[:200]}")

    def _get(self, path, **params):
        return self._check(self._http.get(path, params={k: v for k, v in params.items()
                                                         if v is not None}))

    def _post(self, path, body):
        return self._check(self._http.post(path, json={k: v for k, v in body.items()
                                                        if v is not None}))

    def alive(self, timeout: float = 2.0) -> bool:
        import httpx

        try:
            r = self._http.get("/", timeout=timeout)
        except httpx.HTTPError:
            return False
        return r.status_code == 200 and r.text.lower().startswith("hello world")

    def available(self) -> dict:
        return self._get("/available").json()

    def contexts(self, context=None):
        return self._get("/contexts", context=context).json()

    def catalogs(self, context=None):
        return self._get("/catalogs", context=context).json()

    def validate(self, what, value) -> bool:
        return self._get("/validate", what=what, value=value).text.strip('"') == "OK"

    def query(self, *, ra=None, dec=None, size=None, region=None, constraint=None, context=None,
              fields=None):
        body = {"ra": ra, "dec": dec, "size": size, "constraint": constraint, "context": context,
                "fields": fields,
                "region": [list(map(float, v)) for v in region] if region is not None else None}
        return self._post("/query", body).json()

    def span(self, ids):
        return self._post("/listSpan", {"id_list": list(ids)}).json()

    def batch(self, ids, *, align=False, cutout=None, resample=False, values=None):
        if values is not None and not isinstance(values, str):
            values = ",".join(values)
        body = {"id_list": list(ids), "align": bool(align), "resample": bool(resample),
                "cutout": _cutout_text(cutout), "values": values}
        return formats.decode_batch(self._post("/getSpec", body).content)

    def preview(self, spec_id):
        return self._post("/preview", {"id": spec_id}).content

    def grid(self, ids, nx, ny, page=0, align=False, cutout=None):
        return self._post("/gridPlot", {"id_list": list(ids), "nx": int(nx), "ny": int(ny),
                                        "page": int(page), "align": bool(align),
                                        "cutout": _cutout_text(cutout)}).content

    def stacked(self, ids, *, fmt="png", yflip=False, cutout=None, resample=False):
        r = self._post("/stackedImage", {"id_list": list(ids), "fmt": fmt, "yflip": bool(yflip),
                                         "cutout": _cutout_text(cutout),
                                         "resample": bool(resample)})
        return formats.npy_load(r.content) if fmt == "numpy" else r.content


def _cutout_text(cutout):
    if cutout is None or cutout == "" or cutout is False:
        return None
    if isinstance(cutout, str):
        return cutout
    a, b = cutout
    return f"{float(a)!r}-{float(b)!r}"


def _id_list(id_list) -> tuple[list[str], bool]:
    """Ids from any Data Lab form: one id, a list/array, text one per line, or a file of them."""
    if isinstance(id_list, os.PathLike):
        id_list = os.fspath(id_list)
    if isinstance(id_list, (str, bytes, np.str_, np.bytes_)):
        text = id_list.decode() if isinstance(id_list, (bytes, np.bytes_)) else str(id_list)
        if "\n" in text:
            return [ln.strip() for ln in text.splitlines() if ln.strip()], False
        if ":" not in text and Path(text).is_file():
            lines = Path(text).read_text().splitlines()
            return [ln.strip() for ln in lines if ln.strip() and not ln.startswith("#")], False
        return [text.strip()], True
    if isinstance(id_list, Table):
        col = "specid" if "specid" in id_list.colnames else id_list.colnames[0]
        return [str(x) for x in id_list[col]], False
    return [x.decode() if isinstance(x, bytes) else str(x) for x in id_list], False


class SpecClient:
    """The Data Lab spectroscopic-service client, on a store or a service.

    Parameters
    ----------
    store : str or os.PathLike, optional
        A local store file (no network).
    url : str, optional
        A service base URL (instead of *store*).
    token : str, optional
        Service token (``X-DL-AuthToken``); default ``IFU_EXTRACT_SPECTRA_TOKEN``.
    context : str, optional
        Default context of queries (``None`` or ``'default'``: all).
    profile : str
        Kept for interface compatibility (``'default'``).
    timeout : float
        Seconds per HTTP request.
    limits : Limits, optional
        Request limits applied to a local store (the service applies its own).
    """

    def __init__(self, store=None, *, url=None, token=None, context=None, profile="default",
                 timeout=120.0, limits: Limits | None = None):
        if (store is None) == (url is None):
            raise InputError("client", "give either a store path or a service url",
                             "SpecClient('spectra.ifxs') or SpecClient(url=..., token=...)")
        self.token = token if token is not None else os.environ.get("IFU_EXTRACT_SPECTRA_TOKEN")
        self.timeout = timeout
        self.svc_context = None if context in (None, "", "default") else context
        self.svc_profile = profile or "default"
        if store is not None:
            self.svc_url = None
            self._b = LocalBackend(store, limits=limits)
        else:
            self.svc_url = url.rstrip("/")
            self._b = HTTPBackend(self.svc_url, self.token, timeout)

    def close(self):
        """Release the HTTP connection pool or the store's memory map."""
        if isinstance(self._b, HTTPBackend):
            self._b.close()
        else:
            self._b.store.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- service, context, profile --------------------------------------------------------------
    def set_svc_url(self, svc_url: str) -> None:
        """Use the service at *svc_url* from now on."""
        self.svc_url = svc_url.rstrip("/")
        self._b = HTTPBackend(self.svc_url, self.token, self.timeout)

    def get_svc_url(self) -> str | None:
        return self.svc_url

    def set_context(self, context: str) -> str:
        """Make *context* the default of queries; ``'OK'`` or an error for an unknown one."""
        if context in (None, "", "default"):
            self.svc_context = None
            return "OK"
        if not self._b.validate("context", context):
            raise InputError("context", f"unknown context {context!r}",
                             "list them with list_contexts()")
        self.svc_context = context
        return "OK"

    def get_context(self) -> str:
        return self.svc_context or "default"

    def set_profile(self, profile: str) -> str:
        if profile != "default":
            raise InputError("profile", f"unknown profile {profile!r}", "use 'default'")
        self.svc_profile = profile
        return "OK"

    def get_profile(self) -> str:
        return self.svc_profile

    def list_profiles(self, profile=None, fmt="text"):
        return "default" if fmt == "text" else ["default"]

    def list_contexts(self, context=None, fmt="text"):
        """Context descriptors: text for people, or ``fmt='json'`` (list of dicts)."""
        ctxs = self._b.contexts(context)
        if fmt != "text":
            return ctxs
        lines = []
        for c in ctxs:
            lines.append(f"{c['name']}: {c['n_spectra']} spectra, {c['description']}, "
                         f"{c['wmin']:.2f}-{c['wmax']:.2f} Angstrom ({c['nchan']} channels), "
                         f"flux {c['flux_unit'] or '(no unit)'}, planes {','.join(c['planes'])}, "
                         f"tags {','.join(c['tags'])}")
        return "\n".join(lines)

    def catalogs(self, context=None, profile=None, fmt="text"):
        """Queryable catalogue columns per context (text, or a dict with ``fmt='json'``)."""
        cats = self._b.catalogs(context or self.svc_context)
        if fmt != "text":
            return cats
        lines = []
        for name, c in cats.items():
            cols = ", ".join(f"{k} ({v})" for k, v in c["columns"].items())
            lines.append(f"{name}: {c['catalog']} ({c['n_rows']} rows): {cols}")
        return "\n".join(lines)

    def isAlive(self, svc_url=None, timeout=2) -> bool:
        """True when the service (or the local store) answers."""
        if svc_url:
            b = HTTPBackend(svc_url, self.token, timeout)
            try:
                return b.alive(timeout)
            finally:
                b.close()
        if isinstance(self._b, HTTPBackend):
            return self._b.alive(timeout)
        return self._b.alive()

    # -- query ----------------------------------------------------------------------------------
    def query(self, *args, constraint=None, out=None, context=None, profile=None, fields=None,
              region=None, ra=None, dec=None, size=None, **kw):
        """Spectrum ids by polygon, coordinate and size, or ra, dec, size (degrees).

        ``query(region)``, ``query(coord, size)``, ``query(ra, dec, size)`` or ``query()``;
        *constraint* is a WHERE expression over the catalogue columns (``catalogs()`` lists
        them), optionally ending with ``ORDER BY`` and ``LIMIT``.

        Returns
        -------
        numpy.ndarray of str, or astropy.table.Table
            The ids (``context:ID:TAG``), or a table of *fields* (comma-separated) when given;
            ``'OK'`` when written to *out* (ids one per line, a table as TSV).
        """
        if args:
            first = args[0]
            if hasattr(first, "ra") and hasattr(first, "dec"):  # SkyCoord
                ra, dec = float(first.ra.deg), float(first.dec.deg)
                size = args[1] if len(args) > 1 else (size if size is not None else kw.get("size"))
            elif len(args) >= 2 and np.isscalar(first):
                ra, dec = float(args[0]), float(args[1])
                size = args[2] if len(args) > 2 else size
            else:
                region = first
        if (ra is not None or dec is not None) and size is None:
            raise InputError("query", "a cone needs a size (degrees)", "query(ra, dec, size)")
        ctx = context if context not in (None, "", "default") else self.svc_context
        res = self._b.query(ra=ra, dec=dec, size=None if size is None else float(size),
                            region=None if region is None else [tuple(map(float, v))
                                                                for v in region],
                            constraint=constraint, context=ctx, fields=fields)
        if "table" in res:
            t = Table()
            for name in res["fields"]:
                vals = res["table"][name]
                if any(isinstance(v, str) for v in vals):
                    t[name] = np.array(vals, dtype=str)
                elif vals and all(isinstance(v, int) for v in vals):
                    t[name] = np.array(vals, dtype=np.int64)
                else:
                    t[name] = np.array([np.nan if v is None else v for v in vals],
                                       dtype=np.float64)
            if out:
                write_catalog(t, out, fmt="tsv")
                return "OK"
            return t
        ids = np.asarray(res["ids"], dtype=str)
        width = int(np.char.str_len(ids).max()) if len(ids) else 1
        ids = ids.astype(f"<U{max(width, 1)}", copy=False)  # same dtype whatever the backend
        if out:
            with atomic_path(out, suffix=".txt") as tmp:
                Path(tmp).write_text("".join(f"{i}\n" for i in ids))
            return "OK"
        return ids

    def listSpan(self, id_list) -> dict:
        """Wavelength limits (Angstrom) of spectra: ``{'w0', 'w1', 'contexts'}``."""
        ids, _ = _id_list(id_list)
        return self._b.span(ids)

    # -- retrieval ------------------------------------------------------------------------------
    def getSpec(self, id_list, fmt="numpy", out=None, align=False, cutout=None, context=None,
                profile=None, resample=False, values=None, **kw):
        """Spectra of *id_list* in format *fmt*.

        Parameters
        ----------
        id_list : str, sequence, Table or path
            One id (a single result is returned), a list/array, text one id per line, or a
            file of ids.
        fmt : {'numpy', 'arrays', 'pandas', 'table', 'Spectrum', 'fits'}
            See :mod:`ifu_extract.spectra.formats`.
        out : path, optional
            A folder: write one file per spectrum (``.fits`` for fits, ``.npy`` otherwise) and
            return ``'OK'``.
        align : bool
            Pad all spectra to one channel range of the context's lattice (no resampling).
        cutout : str, optional
            ``'w0-w1'`` Angstrom: channels whose centre lies inside, exact to the channel;
            implies *align*.
        resample : bool
            Allow spectra of contexts on different lattices to be interpolated onto the first
            one's (only when asked).
        values : str or list, optional
            Planes to return (``flux,ivar,mask,sky,model``).
        """
        ids, single = _id_list(id_list)
        batch: SpectraBatch = self._b.batch(ids, align=align, cutout=cutout, resample=resample,
                                            values=values)
        if out:
            return self._save(batch, fmt, out)
        result = formats.format_batch(batch, fmt)
        if single:
            if isinstance(result, list):
                return result[0]
            if isinstance(result, np.ndarray) and result.ndim == 2:
                return result[0]
        return result

    def _save(self, batch: SpectraBatch, fmt: str, out) -> str:
        folder = ensure_dir(out)
        names = [m["specid"].replace(":", "_") for m in batch.meta]
        if (fmt or "").lower() == "fits":
            for name, hdul in zip(names, formats.to_fits(batch)):
                write_hdulist(hdul, folder / f"{name}.fits")
        else:
            data = formats.to_numpy(batch)
            for i, name in enumerate(names):
                with atomic_path(folder / f"{name}.npy", suffix=".npy") as tmp:
                    np.save(tmp, data[i], allow_pickle=False)
        return "OK"

    # -- plots ----------------------------------------------------------------------------------
    def preview(self, spec, context=None, profile=None, **kw) -> bytes:
        """PNG preview (bytes) of one spectrum."""
        ids, _ = _id_list(spec)
        return self._b.preview(ids[0])

    def plotGrid(self, id_list, nx, ny, page=0, context=None, profile=None, align=False,
                 cutout=None, **kw) -> bytes:
        """PNG (bytes) of page *page* of an ``nx`` x ``ny`` grid of previews."""
        ids, _ = _id_list(id_list)
        return self._b.grid(ids, nx, ny, page, align=align, cutout=cutout)

    getGridPlot = plotGrid

    def stackedImage(self, id_list, fmt="png", align=True, yflip=False, context=None,
                     profile=None, cutout=None, resample=False, **kw):
        """Spectra as rows of an image, in the order of *id_list*: the first id is the bottom
        row (row 0 of the array) unless *yflip*.  PNG bytes, or ``fmt='numpy'``: float32
        ``(n, L)`` flux with NaN where there is no data.  Always aligned."""
        ids, _ = _id_list(id_list)
        return self._b.stacked(ids, fmt=fmt, yflip=yflip, cutout=cutout, resample=resample)

    def plot(self, spec, context=None, profile=None, out=None, **kw):
        """Plot one spectrum (an id); save a PNG to *out* or return the matplotlib Figure."""
        ids, _ = _id_list(spec)
        png = self._b.preview(ids[0])
        if out:
            with atomic_path(out, suffix=".png") as tmp:
                Path(tmp).write_bytes(png)
            return "OK"
        import io

        from matplotlib.figure import Figure
        from matplotlib.image import imread

        fig = Figure(figsize=(8, 2.5), dpi=100)
        ax = fig.add_axes((0, 0, 1, 1))
        ax.imshow(imread(io.BytesIO(png), format="png"))
        ax.set_axis_off()
        return fig

    # -- conversions -----------------------------------------------------------------------------
    @staticmethod
    def to_pandas(npy_data):
        return formats.to_pandas(npy_data)

    @staticmethod
    def to_Table(npy_data, flux_unit=None, meta=None):
        return formats.to_Table(npy_data, flux_unit, meta)

    @staticmethod
    def to_Spectrum(npy_data, flux_unit=None, meta=None, medium=None):
        return formats.to_Spectrum(npy_data, flux_unit, meta, medium)

    to_Spectrum1D = to_Spectrum


# -- module-level interface (a default client made on first use) ---------------------------------
_default: SpecClient | None = None


def getClient(context="default", profile="default", *, store=None, url=None, token=None):
    """A new client; with no *store*/*url*, from ``IFU_EXTRACT_SPECTRA_STORE`` / ``_URL``."""
    store = store or (os.environ.get("IFU_EXTRACT_SPECTRA_STORE") if url is None else None)
    url = url or (os.environ.get("IFU_EXTRACT_SPECTRA_URL") if store is None else None)
    if store is None and url is None:
        raise InputError("client", "no store or service given",
                         "pass store= or url=, or set IFU_EXTRACT_SPECTRA_STORE or _URL")
    return SpecClient(store, url=url, token=token, context=context, profile=profile)


def _client() -> SpecClient:
    global _default
    if _default is None:
        _default = getClient()
    return _default


def isAlive(svc_url=None, timeout=2):
    """True when the service at *svc_url* (or the default client) answers."""
    if svc_url:
        b = HTTPBackend(svc_url, None, timeout)
        try:
            return b.alive(timeout)
        finally:
            b.close()
    return _client().isAlive(timeout=timeout)


def query(*args, **kw):
    return _client().query(*args, **kw)


def getSpec(id_list, **kw):
    return _client().getSpec(id_list, **kw)


def preview(spec, **kw):
    return _client().preview(spec, **kw)


def plotGrid(id_list, nx, ny, page=0, **kw):
    return _client().plotGrid(id_list, nx, ny, page, **kw)


getGridPlot = plotGrid


def stackedImage(id_list, **kw):
    return _client().stackedImage(id_list, **kw)


def list_contexts(context=None, fmt="text"):
    return _client().list_contexts(context, fmt)


def catalogs(context=None, profile=None, fmt="text"):
    return _client().catalogs(context, profile, fmt)


to_pandas = formats.to_pandas
to_Table = formats.to_Table
to_Spectrum = formats.to_Spectrum
to_Spectrum1D = formats.to_Spectrum
