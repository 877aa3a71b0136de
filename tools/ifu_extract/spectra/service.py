"""The HTTP spectra service (FastAPI): the project's JSON API and the NOIRLab Data Lab wire
protocol of ``dl.specClient`` (astro-datalab), on the same endpoints.

``GET  /``              alive ("Hello World ..."; open)
``GET  /available``     availability and size (open)
``GET  /profiles``      service profiles (``default``; open)
``GET  /validate``      ``OK`` when a context/profile exists (open: the Data Lab client sends no
                        token)
``GET  /contexts``      context descriptors; with ``format=`` the Data Lab answer (a dict with
                        ``id_main`` and ``catalog``, or a text listing)
``GET  /catalogs``      queryable catalogue columns per context (text with ``format=text``)
``POST /query``         JSON: ids (or a table with ``fields``) by cone, polygon, constraint
``GET  /query``         Data Lab: ``fields catalog cond context id``: CSV; ``cond`` may hold
                        ``q3c_radial_query``/``q3c_poly_query`` (parsed, never pasted)
``POST /listSpan``      wavelength limits of ids (JSON body, or the Data Lab form)
``POST /getSpec``       spectra: JSON body -> binary batch; Data Lab form -> ``.npy``
``POST /preview``       JSON: PNG of one spectrum;  ``GET /preview?id=``: the same (Data Lab)
``POST /gridPlot``      JSON: PNG grid of previews;  ``POST /plotGrid``: the Data Lab form
``POST /stackedImage``  stacked image: JSON -> PNG or ``.npy``; Data Lab form -> PNG
``GET  /openapi.json``  the OpenAPI schema (``/docs`` renders it)

Access (``X-DL-AuthToken`` header; see docs/spectra-service.md): the service token gives every
endpoint.  Requests without a token or with Data Lab's anonymous token
(``anonymous.0.0.anon_access``) are *anonymous*: they reach the open endpoints always and the
data endpoints only when the service runs with ``--anonymous``; anonymous requests are limited
to ``anonymous_rate`` per second per client address (429 beyond).  Any other token is refused
(401).  Everything is read-only.

Requests are limited in body bytes (413), ids, polygon vertices, constraint length, stacked rows
and answer size by :class:`~.backend.Limits`.  User errors are 400 with a one-line ``detail``
(a body that is not strict JSON, e.g. NaN or Infinity, included; a value is never echoed back);
unknown ids 404.
"""

import hmac
import json
import math
import threading
import time
from typing import Literal

from .. import __version__
from ..errors import InputError, ParameterError
from . import datalab
from .backend import CONTEXT_PATTERN, Limits, LocalBackend
from .constraint import MAX_LENGTH
from .formats import encode_batch, npy_bytes, to_fits, to_numpy
from .storefile import UnknownIds

__all__ = ["create_app", "serve", "TOKEN_HEADER", "BATCH_MEDIA_TYPE", "ALIVE_TEXT",
           "ANONYMOUS_RATE", "require_service_extra"]

TOKEN_HEADER = "X-DL-AuthToken"
BATCH_MEDIA_TYPE = "application/x-ifu-extract-spectra"
ALIVE_TEXT = "Hello World! ifu-extract spectra service"
#: Anonymous requests per second per client address (burst: twice as many).
ANONYMOUS_RATE = 20.0
_SLICE = 1 << 20
#: POST paths whose form-encoded (Data Lab) bodies go to the ``/datalab`` routes.
_FORM_PATHS = {"/listSpan", "/getSpec", "/plotGrid", "/gridPlot", "/stackedImage"}


def require_service_extra() -> None:
    """Raise a one-line :class:`InputError` naming the extra when FastAPI/uvicorn are missing."""
    missing = []
    for name in ("fastapi", "uvicorn"):
        try:
            __import__(name)
        except ImportError:
            missing.append(name)
    if missing:
        raise InputError("spectra serve", f"the service needs {' and '.join(missing)}, which "
                         f"{'is' if len(missing) == 1 else 'are'} not installed",
                         "pip install 'ifu-extract[service]'")


class _Guard:
    """ASGI middleware: body size (413), strict JSON (400 for NaN/Infinity, which Python's
    parser would accept and a JSON answer could not echo) and routing of Data Lab form posts."""

    def __init__(self, app, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        ctype = b""
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    too_big = int(value) > self.max_bytes
                except ValueError:
                    too_big = True
                if too_big:
                    return await _send_json(send, 413, f"request body larger than "
                                            f"{self.max_bytes} bytes; send fewer ids per request")
            elif name == b"content-type":
                ctype = value.split(b";")[0].strip().lower()
        if scope["method"] == "POST" and ctype == b"application/x-www-form-urlencoded" \
                and scope["path"] in _FORM_PATHS:
            scope = dict(scope, path="/datalab" + scope["path"],
                         raw_path=b"/datalab" + scope["path"].encode())
        chunks, size, more = [], 0, True
        while more:
            msg = await receive()
            if msg["type"] != "http.request":
                return await self.app(scope, _replay([msg]), send)
            body = msg.get("body", b"")
            size += len(body)
            if size > self.max_bytes:
                return await _send_json(send, 413, f"request body larger than {self.max_bytes} "
                                        "bytes; send fewer ids per request")
            chunks.append(body)
            more = msg.get("more_body", False)
        data = b"".join(chunks)
        if ctype.endswith(b"json") and (b"NaN" in data or b"Infinity" in data):
            problem = _non_json_constant(data)
            if problem:
                return await _send_json(send, 400, f"body: {problem} is not JSON; send finite "
                                        "numbers (or null)")
        whole = {"type": "http.request", "body": data, "more_body": False}
        return await self.app(scope, _replay([whole]), send)


def _non_json_constant(data: bytes) -> str | None:
    """The first NaN/Infinity constant of a JSON body (outside strings), or None."""
    found = []

    def refuse(name):
        found.append(name)
        return 0.0
    try:
        json.loads(data, parse_constant=refuse)
    except ValueError:
        return None  # not JSON at all: the route's validation says so
    return found[0] if found else None


async def _send_json(send, status: int, detail: str):
    body = json.dumps({"detail": detail}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def _replay(messages):
    queue = list(messages)

    async def receive():
        if queue:
            return queue.pop(0)
        return {"type": "http.disconnect"}
    return receive


class _RateLimit:
    """Token buckets per client address: *rate* requests per second, bursts of 2 x rate."""

    def __init__(self, rate: float):
        self.rate = float(rate)
        self.burst = max(1.0, 2.0 * self.rate)
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def allow(self, key: str) -> float:
        """0 when allowed now, else the seconds to wait."""
        if self.rate <= 0:
            return 0.0
        now = time.monotonic()
        with self._lock:
            level, last = self._buckets.get(key, (self.burst, now))
            level = min(self.burst, level + (now - last) * self.rate)
            if level >= 1.0:
                self._buckets[key] = (level - 1.0, now)
                if len(self._buckets) > 10_000:  # forget idle clients
                    self._buckets = {k: v for k, v in self._buckets.items()
                                     if now - v[1] < 60}
                return 0.0
            self._buckets[key] = (level, now)
            return (1.0 - level) / self.rate


def create_app(store, token: str, limits: Limits | None = None, *, anonymous: bool = False,
               anonymous_rate: float = ANONYMOUS_RATE):
    """The FastAPI application serving *store*.

    Parameters
    ----------
    store : str, os.PathLike or Store
    token : str
        The secret that gives full access in ``X-DL-AuthToken``.  A token of Data Lab's shape
        (``user.uid.gid.secret``) also works from the Data Lab client when written to its
        ``~/.datalab/id_token.<user>`` (see docs/spectra-service.md).
    limits : Limits, optional
        Request limits (defaults of :class:`~.backend.Limits`).
    anonymous : bool
        Let anonymous requests (no token, or Data Lab's ``anonymous.0.0.anon_access``) read
        the data endpoints, rate-limited.  Open endpoints are always anonymous.
    anonymous_rate : float
        Anonymous requests per second per client address (0: unlimited).
    """
    require_service_extra()
    from fastapi import Depends, FastAPI, HTTPException, Query, Request, Security
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse, PlainTextResponse, Response
    from fastapi.security import APIKeyHeader
    from pydantic import BaseModel, ConfigDict, Field

    if not token:
        raise ParameterError("{token}", "the service needs a token", "give --token or --token-file",
                             params=("token",))

    class BuffersResponse(Response):
        """A response sent from a list of buffers (no joining copy of large arrays)."""

        def __init__(self, buffers, media_type: str):
            self.buffers = [memoryview(b).cast("B") for b in buffers]
            self.status_code = 200
            self.background = None
            self.media_type = media_type
            self.body = b""
            self.init_headers({"content-length": str(sum(b.nbytes for b in self.buffers))})

        async def __call__(self, scope, receive, send):
            await send({"type": "http.response.start", "status": 200,
                        "headers": self.raw_headers})
            # Slices of 1 MiB: the server copies what it frames and buffers only a slice at a
            # time (it waits for the socket to drain), so a request costs the answer plus a
            # few MiB instead of two more copies of the answer.
            pieces = [buf[a:a + _SLICE] for buf in self.buffers
                      for a in range(0, max(buf.nbytes, 1), _SLICE)]
            self.buffers = []
            last = len(pieces) - 1
            for i, piece in enumerate(pieces):
                await send({"type": "http.response.body", "body": piece, "more_body": i < last})
            if not pieces:
                await send({"type": "http.response.body", "body": b""})
    limits = limits or Limits()
    backend = LocalBackend(store, limits=limits)
    expected = token.encode()
    header = APIKeyHeader(name=TOKEN_HEADER, auto_error=False,
                          description="Service token (ifu-extract spectra serve --token); "
                                      "none or Data Lab's anonymous token for anonymous access")
    limiter = _RateLimit(anonymous_rate)

    def _who(request: Request, given: str | None) -> str:
        """'token' or 'anonymous' (rate-limited); 401 for any other token."""
        if given and hmac.compare_digest(given.encode(), expected):
            return "token"
        if given not in (None, "", datalab.ANON_TOKEN):
            raise HTTPException(status_code=401, detail=f"wrong {TOKEN_HEADER} header",
                                headers={"WWW-Authenticate": TOKEN_HEADER})
        wait = limiter.allow(request.client.host if request.client else "?")
        if wait:
            raise HTTPException(status_code=429, detail="too many anonymous requests; slow "
                                "down or use the service token",
                                headers={"Retry-After": str(max(1, math.ceil(wait)))})
        return "anonymous"

    def open_access(request: Request, given: str | None = Security(header)):
        _who(request, given)

    def data_access(request: Request, given: str | None = Security(header)):
        if _who(request, given) == "anonymous" and not anonymous:
            raise HTTPException(status_code=401, detail=f"missing or wrong {TOKEN_HEADER} "
                                "header (this service has no anonymous access)",
                                headers={"WWW-Authenticate": TOKEN_HEADER})

    app = FastAPI(title="ifu-extract spectra service", version=__version__,
                  description="Query, retrieve, align, cut out and preview extracted spectra "
                              "(NOIRLab Data Lab spectroscopic-service interface and wire "
                              "protocol).")
    app.add_middleware(_Guard, max_bytes=limits.max_body)
    opened, auth = [Depends(open_access)], [Depends(data_access)]
    ids_field = Field(..., min_length=1, max_length=limits.max_ids,
                      description="Spectrum ids 'context:ID:TAG'")

    class _Body(BaseModel):
        model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
        context: str | None = Field(None, pattern=CONTEXT_PATTERN)
        profile: str | None = Field(None, max_length=40)

    class QueryBody(_Body):
        ra: float | None = Field(None, ge=-360, le=720, description="cone centre RA, deg")
        dec: float | None = Field(None, ge=-90, le=90, description="cone centre Dec, deg")
        size: float | None = Field(None, ge=0, le=180, description="cone radius, deg")
        region: list[tuple[float, float]] | None = Field(
            None, min_length=3, max_length=limits.max_region,
            description="polygon vertices (ra, dec), deg")
        constraint: str | None = Field(None, max_length=MAX_LENGTH,
                                       description="WHERE expression in the safe dialect")
        fields: str | None = Field(None, max_length=1000, description="columns, comma-separated")

    class IdsBody(_Body):
        id_list: list[str] = ids_field

    class SpecBody(IdsBody):
        align: bool = False
        cutout: str | None = Field(None, max_length=64, description="'w0-w1' Angstrom")
        resample: bool = False
        values: str | None = Field(None, max_length=100, description="planes, comma-separated")
        fmt: str = Field("numpy", max_length=20, description="format the client will make")

    class PreviewBody(_Body):
        id: str = Field(..., max_length=200)

    class GridBody(IdsBody):
        nx: int = Field(5, ge=1, le=10)
        ny: int = Field(5, ge=1, le=10)
        page: int = Field(0, ge=0)
        align: bool = False
        cutout: str | None = Field(None, max_length=64)

    class StackBody(IdsBody):
        fmt: Literal["png", "numpy"] = "png"
        align: bool = True
        yflip: bool = False
        cutout: str | None = Field(None, max_length=64)
        resample: bool = False

    @app.exception_handler(InputError)
    async def _input_error(request: Request, exc: InputError):
        status = 413 if "limit" in exc.problem else 400
        return JSONResponse(status_code=status, content={"detail": exc.oneline()})

    @app.exception_handler(UnknownIds)
    async def _unknown(request: Request, exc: UnknownIds):
        return JSONResponse(status_code=404, content={"detail": str(exc),
                                                      "unknown": exc.ids[:1000]})

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        # location and message only: the offending value is never echoed back
        detail = [{"loc": [str(x) for x in e.get("loc", ())], "msg": str(e.get("msg", "")),
                   "type": str(e.get("type", ""))} for e in exc.errors()[:20]]
        return JSONResponse(status_code=422, content={"detail": detail})

    def _ctx(context: str | None) -> str | None:
        """A Data Lab context name: ``default``/``None`` is the whole store."""
        context = datalab.optional(context)
        return None if context in (None, datalab.DEFAULT_CONTEXT) else context

    # -- open endpoints ----------------------------------------------------------------------------
    @app.get("/", response_class=PlainTextResponse, summary="Is the service alive")
    def alive():
        return ALIVE_TEXT

    @app.get("/available", summary="Service availability", dependencies=opened)
    def available():
        return backend.available()

    @app.get("/profiles", dependencies=opened, summary="Service profiles")
    def profiles(profile: str | None = Query(None, max_length=40),
                 format: str | None = Query(None, max_length=10)):
        profile = datalab.optional(profile)
        if profile is not None:
            if profile != "default":
                raise InputError("profile", f"unknown profile {profile!r}", "use 'default'")
            return {"default": {"description": "the only profile of this service"}}
        if format == "text":
            return PlainTextResponse("default\n")
        return ["default"]

    @app.get("/validate", dependencies=opened, response_class=PlainTextResponse,
             summary="Validate a context or profile name (open)")
    def validate(what: Literal["context", "profile"],
                 value: str = Query(..., max_length=40)):
        if what == "context" and value == datalab.DEFAULT_CONTEXT:
            return "OK"
        return "OK" if backend.validate(what, value) else "Invalid"

    # -- metadata ----------------------------------------------------------------------------------
    @app.get("/contexts", dependencies=auth, summary="Dataset contexts")
    def contexts(context: str | None = Query(None, max_length=40),
                 format: str | None = Query(None, max_length=10,
                                            description="text|json: the Data Lab answer")):
        if format is None:  # the project's client: a list of descriptors
            return backend.contexts(_checked_context(datalab.optional(context)))
        name = datalab.optional(context)
        if name is None:
            descs = backend.contexts(None)
            if format == "text":
                return PlainTextResponse(datalab.contexts_text(descs))
            return {d["name"]: datalab.context_entry(d) for d in descs}
        if name == datalab.DEFAULT_CONTEXT:
            return datalab.default_entry(backend.contexts(None))
        return datalab.context_entry(backend.contexts(_checked_context(name))[0])

    @app.get("/catalogs", dependencies=auth, summary="Queryable catalogue columns")
    def catalogs(context: str | None = Query(None, max_length=40),
                 profile: str | None = Query(None, max_length=40),
                 format: str | None = Query(None, max_length=10)):
        cats = backend.catalogs(_checked_context(_ctx(context)))
        if format == "text":
            return PlainTextResponse(datalab.catalogs_text(cats))
        return cats

    # -- the project's JSON API --------------------------------------------------------------------
    @app.post("/query", dependencies=auth, summary="Spectrum ids by position and constraint")
    def query(body: QueryBody):
        res = backend.query(ra=body.ra, dec=body.dec, size=body.size, region=body.region,
                            constraint=body.constraint, context=body.context,
                            fields=body.fields)
        if "ids" in res:
            return Response(content=json.dumps({"ids": res["ids"].tolist()}),
                            media_type="application/json")
        return res

    @app.post("/listSpan", dependencies=auth, summary="Wavelength limits of spectra")
    def list_span(body: IdsBody):
        return backend.span(body.id_list)

    @app.post("/getSpec", dependencies=auth, summary="Spectra (binary batch)",
              response_class=Response,
              responses={200: {"content": {BATCH_MEDIA_TYPE: {}}}})
    def get_spec(body: SpecBody):
        batch = backend.batch(body.id_list, align=body.align, cutout=body.cutout,
                              resample=body.resample, values=body.values)
        return BuffersResponse(encode_batch(batch), BATCH_MEDIA_TYPE)

    @app.post("/preview", dependencies=auth, summary="PNG preview of one spectrum",
              response_class=Response, responses={200: {"content": {"image/png": {}}}})
    def preview(body: PreviewBody):
        return Response(content=backend.preview(body.id), media_type="image/png")

    @app.post("/gridPlot", dependencies=auth, summary="PNG grid of previews",
              response_class=Response, responses={200: {"content": {"image/png": {}}}})
    def grid_plot(body: GridBody):
        return Response(content=backend.grid(body.id_list, body.nx, body.ny, body.page,
                                             align=body.align, cutout=body.cutout),
                        media_type="image/png")

    @app.post("/stackedImage", dependencies=auth, summary="Stacked image of spectra",
              response_class=Response,
              responses={200: {"content": {"image/png": {}, "application/x-npy": {}}}})
    def stacked_image(body: StackBody):
        out = backend.stacked(body.id_list, fmt=body.fmt, yflip=body.yflip, cutout=body.cutout,
                              resample=body.resample)
        if body.fmt == "numpy":
            return Response(content=npy_bytes(out), media_type="application/x-npy")
        return Response(content=out, media_type="image/png")

    # -- the Data Lab wire protocol ----------------------------------------------------------------
    @app.get("/query", dependencies=auth, response_class=PlainTextResponse,
             summary="Data Lab query: CSV of fields for a cond (q3c_radial_query, q3c_poly_query, "
                     "constraint)", responses={200: {"content": {"text/csv": {}}}})
    def dl_query(fields: str | None = Query(None, max_length=1000),
                 catalog: str | None = Query(None, max_length=100),
                 cond: str | None = Query(None, max_length=MAX_LENGTH + 200),
                 context: str | None = Query(None, max_length=40),
                 id: str | None = Query(None, max_length=200),
                 profile: str | None = Query(None, max_length=40)):
        name = _ctx(context)
        cat = datalab.optional(catalog)
        if cat is not None and cat not in (datalab.CATALOG, f"{name}.{datalab.CATALOG}"):
            raise InputError("catalog", f"unknown catalog {cat[:60]!r}",
                             f"use {datalab.CATALOG!r} (see catalogs())")
        ids = None
        if datalab.optional(id) is not None:
            ids, _ = datalab.parse_id_list(id, limits.max_ids)
        s, rows = backend.query_rows(constraint=datalab.optional(cond), context=name, ids=ids)
        table = backend.table(rows, datalab.optional(fields) or datalab.ID_MAIN, s)
        return Response(content=datalab.csv_table(table), media_type="text/csv")

    def _form_ids(form: dict) -> tuple[list, bool]:
        return datalab.parse_id_list(form.get("id_list"), limits.max_ids)

    async def _form(request: Request) -> dict:
        return datalab.parse_form(await request.body())

    from starlette.concurrency import run_in_threadpool  # the work leaves the event loop

    @app.post("/datalab/listSpan", dependencies=auth,
              summary="Data Lab listSpan (form body sent to POST /listSpan)")
    async def dl_list_span(request: Request):
        ids, _ = _form_ids(await _form(request))
        return await run_in_threadpool(lambda: backend.span(backend.resolve(ids)))

    @app.post("/datalab/getSpec", dependencies=auth, response_class=Response,
              summary="Data Lab getSpec (form body sent to POST /getSpec): .npy or FITS",
              responses={200: {"content": {"application/x-npy": {}, "application/fits": {}}}})
    async def dl_get_spec(request: Request):
        return await run_in_threadpool(_dl_get_spec, await _form(request))

    def _dl_get_spec(form: dict):
        ids, single = _form_ids(form)
        fmt = (datalab.optional(form.get("format")) or "numpy").lower()
        values = datalab.optional(form.get("values"))
        if values is not None and values.lower() == "all":
            values = None
        align = datalab.flag(form.get("align"))
        cutout = datalab.optional(form.get("cutout"))
        if fmt == "fits":
            if len(ids) != 1:
                raise InputError("format", "FITS answers hold one spectrum",
                                 "ask for one id per request")
            import io

            buf = io.BytesIO()
            to_fits(backend.batch(ids, values=values))[0].writeto(buf)
            return Response(content=buf.getvalue(), media_type="application/fits")
        batch = backend.batch(ids, align=align, cutout=cutout, values=values, wave_words=2)
        arr = to_numpy(batch)
        del batch  # the answer's structured array is all that stays
        if isinstance(arr, list):
            if single or len(arr) == 1:
                arr = arr[0]
            elif len({a.shape for a in arr}) == 1:
                import numpy as np

                arr = np.stack(arr)
            else:
                raise InputError("id_list", "these spectra have different lengths",
                                 "ask with align=True (or one id per request)")
        elif single and arr.ndim == 2:
            arr = arr[0]
        return BuffersResponse([datalab.npy_header(arr), arr.reshape(-1).view("u1")],
                               "application/x-npy")

    @app.get("/preview", dependencies=auth, response_class=Response,
             summary="Data Lab preview: PNG of one spectrum",
             responses={200: {"content": {"image/png": {}}}})
    def dl_preview(id: str = Query(..., max_length=200),
                   context: str | None = Query(None, max_length=40),
                   profile: str | None = Query(None, max_length=40)):
        ids, _ = datalab.parse_id_list(id, 1)
        return Response(content=backend.preview(backend.resolve(ids)[0]),
                        media_type="image/png")

    async def _grid(request: Request):
        return await run_in_threadpool(_grid_png, await _form(request))

    def _grid_png(form: dict):
        ids, _ = _form_ids(form)
        try:
            ncols = int(datalab.optional(form.get("ncols")) or 5)
        except ValueError:
            raise InputError("ncols", "is not a whole number", "send 1-10") from None
        if not 1 <= ncols <= 10:
            raise InputError("ncols", f"{ncols} columns", "send 1-10")
        nrows = max(1, math.ceil(len(ids) / ncols))
        if nrows > 10:
            raise InputError("id_list", f"{len(ids)} spectra do not fit a grid of {ncols} "
                             "columns and at most 10 rows", "send fewer ids per page")
        return Response(content=backend.grid(ids, ncols, nrows, 0), media_type="image/png")

    @app.post("/plotGrid", dependencies=auth, response_class=Response,
              summary="Data Lab plotGrid (form: id_list, ncols): PNG grid",
              responses={200: {"content": {"image/png": {}}}})
    async def dl_plot_grid(request: Request):
        return await _grid(request)

    app.add_api_route("/datalab/plotGrid", dl_plot_grid, methods=["POST"], dependencies=auth,
                      include_in_schema=False)
    app.add_api_route("/datalab/gridPlot", dl_plot_grid, methods=["POST"], dependencies=auth,
                      include_in_schema=False)

    @app.post("/datalab/stackedImage", dependencies=auth, response_class=Response,
              summary="Data Lab stackedImage (form body sent to POST /stackedImage): PNG",
              responses={200: {"content": {"image/png": {}}}})
    async def dl_stacked(request: Request):
        return await run_in_threadpool(_stacked_png, await _form(request))

    def _stacked_png(form: dict):
        ids, _ = _form_ids(form)

        def num(key, default, kind=float):
            v = datalab.optional(form.get(key))
            try:
                x = default if v is None else float(v)
                if not math.isfinite(x):
                    raise ValueError(v)
                return kind(x)
            except (ValueError, OverflowError):
                raise InputError(key, f"{v[:20]!r} is not a number", "send a number") from None
        style = {"cmap": datalab.optional(form.get("cmap")) or "gray",
                 "inverse": datalab.flag(form.get("inverse")),
                 "thickness": num("thickness", 1, int), "xscale": num("xscale", 1.0),
                 "yscale": num("yscale", 1.0), "width": num("width", 0, int),
                 "height": num("height", 0, int)}
        png = backend.stacked(ids, fmt="png", yflip=datalab.flag(form.get("yflip")),
                              style=style)
        return Response(content=png, media_type="image/png")

    app.state.backend = backend
    return app


def _checked_context(name: str | None) -> str | None:
    """*name* when it is a context name (or None); a 400 otherwise."""
    import re

    if name is not None and re.fullmatch(CONTEXT_PATTERN, name) is None:
        raise InputError("context", f"{name[:40]!r} is not a context name",
                         "use lower-case letters, digits and _")
    return name


def serve(store, *, token: str, host: str = "127.0.0.1", port: int = 8000,
          limits: Limits | None = None, access_log: bool = False, anonymous: bool = False,
          anonymous_rate: float = ANONYMOUS_RATE) -> None:
    """Run the service with uvicorn until interrupted; *access_log* logs every request to
    stderr (uvicorn's access format: client, request line, status)."""
    require_service_extra()
    import uvicorn

    import copy

    from uvicorn.config import LOGGING_CONFIG

    app = create_app(store, token, limits, anonymous=anonymous, anonymous_rate=anonymous_rate)
    config = copy.deepcopy(LOGGING_CONFIG)
    config["handlers"]["access"]["stream"] = "ext://sys.stderr"  # logs on stderr, not stdout
    # uvicorn's access logger writes at INFO: at level "warning" it would log nothing
    uvicorn.run(app, host=host, port=port, log_level="info" if access_log else "warning",
                access_log=access_log, log_config=config)
