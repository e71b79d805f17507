"""The FastAPI application: routes, error bodies, the page at ``/``, and the guards around it."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from starlette.exceptions import HTTPException

from rag.errors import RagError
from rag.serve import routes_documents, routes_query
from rag.serve.config import ServeConfig
from rag.serve.context import Served
from rag.serve.errors import ApiError, Scrubber, body, from_library, unexpected
from rag.serve.guards import ASGIApp, Guard
from rag.serve.openapi import describe
from rag.serve.origins import OriginPolicy
from rag.serve.state import WarmIndex
from rag.serve.uploads import Uploads
from rag.serve.writes import WriteQueue

log = logging.getLogger(__name__)

PAGE_DIR = Path(__file__).resolve().parent / "page"
_PAGE_FILES = {"app.js": "text/javascript", "style.css": "text/css", "favicon.svg": "image/svg+xml"}


def create_app(config: ServeConfig, index: WarmIndex, *, ingest_workers: int | None = 1) -> ASGIApp:
    """The ASGI application serving ``index``: FastAPI inside the key and size guards, with CORS
    only for the origins ``config`` names."""
    app = FastAPI(
        title="rag-toolkit",
        summary="Cited answers from your documents, OpenAI-compatible.",
        docs_url=None,  # the interactive docs load scripts from a CDN
        redoc_url=None,
    )
    app.state.served = Served(
        config, index, Uploads(config.uploads), ingest_workers, WriteQueue(config.max_queued_writes)
    )
    app.state.scrub = Scrubber(config.uploads.expanduser().resolve(), config.index_dir)
    app.include_router(routes_query.router)
    app.include_router(routes_documents.router)
    _add_page(app)
    _add_error_handlers(app)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = describe(
                FastAPI.openapi(app),
                keyed=config.api_key is not None,
                max_files=config.limits.max_files,
            )
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    origins = OriginPolicy(
        keyless=config.api_key is None,
        allowed_hosts=config.allowed_hosts,
        cors_origins=config.cors_origins,
    )
    guarded: ASGIApp = Guard(app, api_key=config.api_key, limits=config.limits, origins=origins)
    if config.cors_origins:
        from starlette.middleware.cors import CORSMiddleware

        # Outside the guard, so that a browser's preflight (which carries no key) is answered.
        guarded = CORSMiddleware(
            guarded,
            allow_origins=list(config.cors_origins),
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["authorization", "content-type", "x-requested-with"],
        )
    return guarded


def _add_page(app: FastAPI) -> None:
    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(PAGE_DIR / "index.html", media_type="text/html")

    @app.get("/favicon.ico", include_in_schema=False)
    def favicon() -> FileResponse:
        # Browsers and tools ask here whatever the page links to.
        return FileResponse(PAGE_DIR / "favicon.svg", media_type="image/svg+xml")

    @app.get("/page/{name}", include_in_schema=False)
    def page_file(name: str) -> FileResponse:
        # A fixed list: the name is looked up, never joined to a path as given.
        if name not in _PAGE_FILES:
            raise ApiError(404, f"No page file {name!r}.", "not_found_error")
        return FileResponse(PAGE_DIR / name, media_type=_PAGE_FILES[name])


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> Response:
        response = _json(exc.status, app.state.scrub(exc.message), exc.kind, _request_id(request))
        response.headers.update(exc.headers)
        return response

    @app.exception_handler(RagError)
    async def library_error(request: Request, exc: RagError) -> Response:
        rid = _request_id(request)
        err = from_library(exc, rid, app.state.scrub)
        return _json(err.status, err.message, err.kind, rid)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> Response:
        problems = "; ".join(_problem(e) for e in exc.errors()[:5])
        return _json(
            422, f"Invalid request: {problems}.", "invalid_request_error", _request_id(request)
        )

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> Response:
        kind = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
        response = _json(exc.status_code, str(exc.detail), kind, _request_id(request))
        if exc.headers:
            response.headers.update(exc.headers)
        return response

    @app.exception_handler(Exception)
    async def failed(request: Request, exc: Exception) -> Response:
        rid = _request_id(request)
        err = unexpected(exc, rid)
        return _json(err.status, err.message, err.kind, rid)


def _request_id(request: Request) -> str:
    return str(getattr(request.state, "request_id", ""))


def _problem(error: dict[str, Any]) -> str:
    where = ".".join(str(p) for p in error.get("loc", ()) if p != "body")
    return f"{where or 'body'}: {error.get('msg', 'invalid')}"


def _json(status: int, message: str, kind: str, request_id: str = "") -> JSONResponse:
    return JSONResponse(body(status, message, kind, request_id), status_code=status)
