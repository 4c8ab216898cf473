"""The FastAPI application of ``defocus serve``: the ``/v1`` API, health checks and the static page."""
from __future__ import annotations

import asyncio
import hmac
import logging
import sys
import threading
import time
from contextlib import asynccontextmanager, contextmanager
from importlib import resources
from typing import Literal, Optional

from fastapi import APIRouter, Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from .. import __version__
from ..inference import Predictor
from . import jobs
from .pool import BoundedPool, PoolFull, PoolTimeout
from .predictors import ServerPredictors
from .settings import API_KEY_HEADER, MAX_SIZE, MIN_SIZE, ServeSettings
from .uploads import ServeError, read_uploads

log = logging.getLogger(__name__)

STATIC_DIR = resources.files("defocus.serve") / "static"

_IMAGE_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {"schema": {"type": "object", "properties": {
                "file": {"type": "array", "items": {"type": "string", "format": "binary"},
                         "description": "The image file(s); /v1/predict takes one."}}}},
            "image/*": {"schema": {"type": "string", "format": "binary"},
                        "description": "Or the image itself as the body (name it with an X-Filename header)."},
        },
    }
}


class ErrorBody(BaseModel):
    """Every error answer of the API: one line saying what was wrong."""

    error: str


#: The error answers of the /v1 routes, for the OpenAPI reference (each has the body ``{"error": "..."}``).
ERROR_RESPONSES = {status: {"model": ErrorBody, "description": text} for status, text in (
    (400, "a malformed upload, or the client disconnected during it"),
    (401, "missing or wrong API key (when the server has one)"),
    (408, "the upload did not arrive within the request timeout"),
    (413, "an upload or image above the server's limits"),
    (422, "an invalid parameter, or a file that is no usable image"),
    (503, "every worker busy (see Retry-After), or the model not loaded yet"),
    (504, "no result within the request timeout"),
)}


class ServerState:
    """What the routes share: settings, the loaded model, the worker pool and the loading status."""

    def __init__(self, settings: ServeSettings, predictor: Predictor | None):
        self.settings = settings
        self.predictors = ServerPredictors(settings, predictor)
        self.torch_threads = settings.threads or _current_torch_threads()
        self.pool = BoundedPool(settings.workers, settings.queue_size, self._init_worker)
        self.load_error: str | None = None
        self._loader: threading.Thread | None = None

    def _init_worker(self) -> None:
        # PyTorch keeps a thread count per thread, fixed at the thread's first parallel operation: without this a
        # worker runs with whatever count was current then, and its float rounding can differ from the CLI's
        torch = sys.modules.get("torch")
        if torch is not None and self.torch_threads:
            torch.set_num_threads(self.torch_threads)

    @property
    def ready(self) -> bool:
        """The default model is loaded."""
        return self.predictors.default is not None

    def start_loading(self) -> None:
        """Load the default model in the background (the server answers /healthz meanwhile)."""
        if self.ready or self._loader is not None:
            return

        def load():
            try:
                self.predictors.load_default()
                log.info("model loaded: %s", self.predictors.default.info)
            except Exception as e:  # reported by /readyz and by every prediction request
                self.load_error = f"cannot load model {self.settings.model!r}: {e}"
                log.error("%s", self.load_error)

        self._loader = threading.Thread(target=load, name="defocus-serve-load", daemon=True)
        self._loader.start()

    def require_ready(self) -> Predictor:
        """The default predictor, or a 503 while it is loading (or failed to load)."""
        if self.load_error:
            raise ServeError(503, self.load_error)
        if not self.ready:
            raise ServeError(503, "the model is still loading; retry shortly", {"Retry-After": "2"})
        return self.predictors.default


def _current_torch_threads() -> int | None:
    torch = sys.modules.get("torch")  # only when torch is in use already: a torch-free model must stay torch-free
    return torch.get_num_threads() if torch is not None else None


def _error(status: int, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": " ".join(str(message).split())}, status_code=status, headers=headers)


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors():
        where = ".".join(str(x) for x in err.get("loc", ()) if x not in ("query", "body", "header"))
        parts.append(f"{where}: {err.get('msg', 'invalid')}" if where else str(err.get("msg", "invalid")))
    return "invalid request: " + "; ".join(parts)


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ServeError)
    async def serve_error(request: Request, exc: ServeError):
        return _error(exc.status, exc.message, exc.headers)

    @app.exception_handler(PoolFull)
    async def pool_full(request: Request, exc: PoolFull):
        return _error(503, str(exc), {"Retry-After": str(exc.retry_after)})

    @app.exception_handler(PoolTimeout)
    async def pool_timeout(request: Request, exc: PoolTimeout):
        return _error(504, str(exc))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        return _error(exc.status_code, exc.detail, getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        return _error(422, _validation_message(exc))

    @app.exception_handler(ClientDisconnect)
    async def disconnected(request: Request, exc: ClientDisconnect):
        log.info("client disconnected during %s %s", request.method, request.url.path)
        return _error(400, "the client disconnected before the upload was complete")

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception):
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return _error(500, f"internal error ({type(exc).__name__})")


def _options(state: ServerState, size: Optional[int], keep_aspect: Optional[bool], upscale: Optional[bool],
             refine: Optional[bool], threshold: Optional[float], include: str) -> jobs.Options:
    wanted = tuple(dict.fromkeys(k.strip() for k in include.split(",") if k.strip()))
    bad = [k for k in wanted if k not in jobs.OUTPUTS]
    if bad:
        raise ServeError(422, f"include: unknown output(s) {', '.join(bad)}; choose from {', '.join(jobs.OUTPUTS)}")
    s, default = state.settings, state.require_ready().options   # the model's own size and upscale, resolved
    return jobs.Options(size=default.size if size is None else size,
                        keep_aspect=s.keep_aspect if keep_aspect is None else keep_aspect,
                        upscale=default.upscale if upscale is None else upscale,
                        refine=s.refine if refine is None else refine,
                        threshold=s.threshold if threshold is None else threshold, include=wanted)


@contextmanager
def _reserved(state: ServerState):
    """A worker slot for one request, taken before its upload is read (503 when none is free) and freed when no
    job came of it (a bad upload); a job frees it when it finishes."""
    slot = state.pool.reserve()
    try:
        yield slot
    finally:
        slot.release()


async def _read_in_time(state: ServerState, request: Request, max_files: int):
    """The request's uploads, received within the request timeout (408 otherwise: a slow sender must not hold
    a slot for ever)."""
    timeout = state.settings.request_timeout
    try:
        return await asyncio.wait_for(read_uploads(request, max_files, state.settings.max_upload_bytes), timeout)
    except asyncio.TimeoutError:
        raise ServeError(408, f"the upload did not arrive within the request timeout of {timeout:g} s") from None


def _api_router(state: ServerState) -> APIRouter:
    def check_key(request: Request):
        key = state.settings.api_key
        if key is not None:
            given = request.headers.get(API_KEY_HEADER, "")
            if not hmac.compare_digest(given.encode(), key.encode()):
                raise ServeError(401, f"missing or wrong API key (header {API_KEY_HEADER})")

    router = APIRouter(prefix="/v1", dependencies=[Depends(check_key)], responses=ERROR_RESPONSES)
    size_q = Query(None, ge=MIN_SIZE, le=MAX_SIZE, description="Network input size (default: the server's).")
    keep_q = Query(None, description="Keep the aspect ratio (long side = size) instead of the square resize.")
    upscale_q = Query(None, description="Enlarge images smaller than the input size (false: run them at their own "
                                        "size).")
    refine_q = Query(None, description="Refine the map along the image's colour edges (closed-form matting; a few "
                                       "seconds an image on a CPU; default: the server's).")
    threshold_q = Query(None, ge=0.0, le=1.0, description="Mask threshold on the in-focus probability.")
    include_q = Query(",".join(jobs.OUTPUTS), description="Outputs inlined as data: URLs: any of prob,mask,overlay "
                                                          "(empty: none).")

    @router.post("/predict", openapi_extra=_IMAGE_BODY, summary="In-focus map of one image")
    async def predict(request: Request, size: Optional[int] = size_q, keep_aspect: Optional[bool] = keep_q,
                      upscale: Optional[bool] = upscale_q, refine: Optional[bool] = refine_q,
                      threshold: Optional[float] = threshold_q,
                      include: str = include_q,
                      output: Literal["json", "prob", "mask", "overlay"] = Query(
                          "json", description="json, or one output returned as the image itself.")):
        """One image (multipart field ``file`` or the raw body) -> in-focus fraction, size, model, timings and
        the probability map (PNG, 255 = in focus), mask (PNG) and overlay (JPEG)."""
        t0 = time.perf_counter()
        state.require_ready()
        options = _options(state, size, keep_aspect, upscale, refine, threshold, include)
        kind = None if output == "json" else output
        with _reserved(state) as slot:
            uploads = await _read_in_time(state, request, 1)
            result = await state.pool.run(jobs.predict_one, state.predictors, uploads[0], options, kind,
                                          timeout=state.settings.request_timeout, slot=slot)
        if kind is not None:
            data, media_type = result
            return Response(data, media_type=media_type)
        result["timings"]["request_seconds"] = round(time.perf_counter() - t0, 4)
        return result

    @router.post("/predict/batch", openapi_extra=_IMAGE_BODY, summary="In-focus maps of several images")
    async def predict_batch(request: Request, size: Optional[int] = size_q, keep_aspect: Optional[bool] = keep_q,
                            upscale: Optional[bool] = upscale_q, refine: Optional[bool] = refine_q,
                            threshold: Optional[float] = threshold_q,
                            include: str = include_q):
        """Several images (repeated multipart field ``file``) -> ``results`` in upload order; an unusable image
        gets an ``error`` and the others are still predicted."""
        t0 = time.perf_counter()
        state.require_ready()
        options = _options(state, size, keep_aspect, upscale, refine, threshold, include)
        with _reserved(state) as slot:
            uploads = await _read_in_time(state, request, state.settings.max_batch_files)
            results = await state.pool.run(jobs.predict_batch, state.predictors, uploads, options,
                                           timeout=state.settings.request_timeout, slot=slot)
        return {"results": results, "failed": sum(1 for r in results if r["error"]),
                "request_seconds": round(time.perf_counter() - t0, 4)}

    @router.get("/models", summary="The model this server runs")
    async def models():
        """The loaded model and the server's prediction defaults and limits."""
        predictor = state.require_ready()
        s = state.settings
        return {"models": [{**predictor.info.to_dict(), "default": True}],
                "defaults": {"size": predictor.options.size, "keep_aspect": s.keep_aspect,
                             "upscale": predictor.options.upscale, "threshold": s.threshold, "upsample": s.upsample,
                             "flip_tta": s.flip_tta, "refine": s.refine},
                "limits": {"max_upload_bytes": s.max_upload_bytes, "max_pixels": s.max_pixels,
                           "max_batch_files": s.max_batch_files, "request_timeout": s.request_timeout,
                           "size_range": [MIN_SIZE, MAX_SIZE]}}

    return router


def create_app(settings: ServeSettings | None = None, predictor: Predictor | None = None) -> FastAPI:
    """The server's application. ``predictor`` (built with the settings' size and keep_aspect) is used as the
    default model; without one the model given by ``settings.model`` is loaded in the background at start-up
    and ``/readyz`` answers 503 until it is ready."""
    settings = settings or ServeSettings()
    state = ServerState(settings, predictor)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        state.start_loading()
        yield
        state.pool.shutdown()

    app = FastAPI(title="defocus", version=__version__, lifespan=lifespan,
                  description="In-focus maps of photos (defocus blur detection with D-DFFNet).")
    app.state.defocus = state
    _install_error_handlers(app)
    app.include_router(_api_router(state))

    @app.get("/healthz", summary="The process is up")
    @app.head("/healthz", include_in_schema=False)
    async def healthz():
        """Always 200 while the server runs."""
        return {"status": "ok"}

    @app.get("/readyz", summary="The model is loaded")
    async def readyz():
        """200 once the default model is loaded, else 503."""
        if state.ready:
            return {"status": "ready", "model": state.predictors.default.info.to_dict()}
        return _error(503, state.load_error or "the model is still loading")

    @app.api_route("/", methods=["GET", "HEAD"], include_in_schema=False)
    async def page():
        return FileResponse(str(STATIC_DIR / "index.html"), media_type="text/html")

    app.mount("/static", StaticFiles(directory=str(STATIC_DIR)), name="static")
    return app
