"""The HTTP spectra service (FastAPI), with the NOIRLab Data Lab endpoint names.

``GET  /``              alive ("Hello World ..."; no token needed)
``GET  /available``     availability and size (no token needed)
``GET  /profiles``      service profiles (``default``)
``GET  /contexts``      context descriptors (grid, units, planes, coverage)
``GET  /catalogs``      queryable catalogue columns per context
``GET  /validate``      ``OK`` when a context/profile exists
``POST /query``         ids (or a table with ``fields``) by cone, polygon, context, constraint
``POST /listSpan``      wavelength limits of ids
``POST /getSpec``       spectra (binary batch: JSON header + arrays; the client formats it)
``POST /preview``       PNG of one spectrum
``POST /gridPlot``      PNG grid of previews (page by page)
``POST /stackedImage``  stacked image, PNG or ``.npy``
``GET  /openapi.json``  the OpenAPI schema (``/docs`` renders it)

Every endpoint but ``/`` and ``/available`` needs the token in the ``X-DL-AuthToken`` header
(compared in constant time); without it or with a wrong one the answer is 401.  Request bodies
are limited in bytes (413), id lists, polygon vertices, constraint length and answer size by
:class:`~.backend.Limits`.  User errors are 400 with a one-line ``detail``; unknown ids 404.
"""


import hmac
import json
from typing import Literal

from .. import __version__
from ..errors import InputError
from .backend import CONTEXT_PATTERN, Limits, LocalBackend
from .constraint import MAX_LENGTH
from .formats import encode_batch, npy_bytes
from .storefile import UnknownIds

__all__ = ["create_app", "serve", "TOKEN_HEADER", "BATCH_MEDIA_TYPE", "ALIVE_TEXT"]

TOKEN_HEADER = "X-DL-AuthToken"
BATCH_MEDIA_TYPE = "application/x-ifu-extract-spectra"
ALIVE_TEXT = "Hello World! ifu-extract spectra service"


class _BodyLimit:
    """ASGI middleware: refuse request bodies larger than *max_bytes* with 413."""

    def __init__(self, app, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    too_big = int(value) > self.max_bytes
                except ValueError:
                    too_big = True
                if too_big:
                    return await self._refuse(send)
        chunks, size, more = [], 0, True
        while more:
            msg = await receive()
            if msg["type"] != "http.request":
                return await self.app(scope, _replay([msg]), send)
            body = msg.get("body", b"")
            size += len(body)
            if size > self.max_bytes:
                return await self._refuse(send)
            chunks.append(body)
            more = msg.get("more_body", False)
        whole = {"type": "http.request", "body": b"".join(chunks), "more_body": False}
        return await self.app(scope, _replay([whole]), send)

    async def _refuse(self, send):
        body = json.dumps({"detail": f"request body larger than {self.max_bytes} bytes; send "
                                     "fewer ids per request"}).encode()
        await send({"type": "http.response.start", "status": 413,
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


def create_app(store, token: str, limits: Limits | None = None):
    """The FastAPI application serving *store*.

    Parameters
    ----------
    store : str, os.PathLike or Store
    token : str
        The secret every protected request must carry in ``X-DL-AuthToken``.
    limits : Limits, optional
        Request limits (defaults of :class:`~.backend.Limits`).
    """
    from fastapi import Depends, FastAPI, HTTPException, Query, Request, Security
    from fastapi.responses import JSONResponse, PlainTextResponse, Response
    from fastapi.security import APIKeyHeader
    from pydantic import BaseModel, ConfigDict, Field

    if not token:
        raise InputError("--token", "the service needs a token", "give --token or --token-file")

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
            last = len(self.buffers) - 1
            for i, buf in enumerate(self.buffers):
                await send({"type": "http.response.body", "body": buf, "more_body": i < last})
            if not self.buffers:
                await send({"type": "http.response.body", "body": b""})
    limits = limits or Limits()
    backend = LocalBackend(store, limits=limits)
    expected = token.encode()
    header = APIKeyHeader(name=TOKEN_HEADER, auto_error=False,
                          description="Service token (ifu-extract spectra serve --token)")

    def require_token(given: str | None = Security(header)):
        if given is None or not hmac.compare_digest(given.encode(), expected):
            raise HTTPException(status_code=401, detail=f"missing or wrong {TOKEN_HEADER} header",
                                headers={"WWW-Authenticate": TOKEN_HEADER})

    app = FastAPI(title="ifu-extract spectra service", version=__version__,
                  description="Query, retrieve, align, cut out and preview extracted spectra "
                              "(NOIRLab Data Lab spectroscopic-service interface).")
    app.add_middleware(_BodyLimit, max_bytes=limits.max_body)
    auth = [Depends(require_token)]
    ids_field = Field(..., min_length=1, max_length=limits.max_ids,
                      description="Spectrum ids 'context:ID:TAG'")

    class _Body(BaseModel):
        model_config = ConfigDict(extra="forbid")
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

    @app.get("/", response_class=PlainTextResponse, summary="Is the service alive")
    def alive():
        return ALIVE_TEXT

    @app.get("/available", summary="Service availability")
    def available():
        return backend.available()

    @app.get("/profiles", dependencies=auth, summary="Service profiles")
    def profiles():
        return ["default"]

    @app.get("/contexts", dependencies=auth, summary="Dataset contexts")
    def contexts(context: str | None = Query(None, pattern=CONTEXT_PATTERN)):
        return backend.contexts(context)

    @app.get("/catalogs", dependencies=auth, summary="Queryable catalogue columns")
    def catalogs(context: str | None = Query(None, pattern=CONTEXT_PATTERN)):
        return backend.catalogs(context)

    @app.get("/validate", dependencies=auth, response_class=PlainTextResponse,
             summary="Validate a context or profile name")
    def validate(what: Literal["context", "profile"],
                 value: str = Query(..., max_length=40)):
        return "OK" if backend.validate(what, value) else "Invalid"

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

    app.state.backend = backend
    return app


def serve(store, *, token: str, host: str = "127.0.0.1", port: int = 8000,
          limits: Limits | None = None, access_log: bool = False) -> None:
    """Run the service with uvicorn until interrupted."""
    import uvicorn

    app = create_app(store, token, limits)
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=access_log)
