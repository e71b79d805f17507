"""The index routes: uploads (``POST /v1/documents``), deletions, and what the index holds."""

from __future__ import annotations

from typing import Any, BinaryIO

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException

from rag.index.documents import delete_documents
from rag.index.summary import describe
from rag.serve.context import Ctx, Served
from rag.serve.errors import ApiError

router = APIRouter()


@router.post("/v1/documents")
async def upload(request: Request, ctx: Ctx) -> dict[str, Any]:
    """Ingest the uploaded files (multipart, any field name) in one commit; the ingest report."""
    limits = ctx.config.limits
    try:
        form = await request.form(max_files=limits.max_files, max_fields=limits.max_files)
    except (MultiPartException, HTTPException) as exc:
        # Starlette reports a malformed body, and one over max_files, as an HTTPException.
        detail = str(getattr(exc, "detail", exc))
        if "Too many files" in detail or "Too many fields" in detail:
            raise ApiError(
                413,
                f"An upload may hold at most {limits.max_files} files (rag serve --max-files).",
                "request_too_large",
            ) from exc
        raise ApiError(
            400,
            f"Could not read the upload: {detail}. Send files as multipart/form-data, at most "
            f"{limits.max_files} in one request (rag serve --max-files).",
        ) from exc
    try:
        files = [v for _, v in form.multi_items() if isinstance(v, UploadFile)]
        if not files:
            raise ApiError(
                400,
                "No files in the upload: send them as multipart/form-data file fields, e.g. "
                "curl -F files=@report.pdf .../v1/documents",
            )
        named: list[tuple[str, BinaryIO]] = [(f.filename or "", f.file) for f in files]
        async with ctx.writes.turn():
            report = await run_in_threadpool(ctx.uploads.add, ctx.index, named, ctx.ingest_workers)
        report["index"] = ctx.index.index_dir.name
        with ctx.index.lease() as rag:
            return ctx.names(rag).rewrite(report)
    finally:
        await form.close()


@router.delete("/v1/documents/{source:path}")
async def delete(source: str, ctx: Ctx) -> dict[str, Any]:
    """Remove the document whose source is ``source`` (or the upload named ``source``)."""
    async with ctx.writes.turn():
        return await run_in_threadpool(_delete, source, ctx)


def _delete(source: str, ctx: Served) -> dict[str, Any]:
    with ctx.index.lease() as rag:
        known = {d.source for d in rag.store.documents()}
        names = ctx.names(rag)
    exact = names.resolve(source, known)
    if exact is None:
        raise ApiError(
            404,
            f"No document {source!r} in the index; GET /v1/index lists the sources.",
            "not_found_error",
        )
    with ctx.index.writing():
        # The exact source only: a source holding glob characters must not match others.
        removed, _ = delete_documents(ctx.index.index_dir, [exact], only={exact})
    for doc in removed:
        ctx.uploads.remove(doc.source)
    return {"deleted": [names.public(d.source) for d in removed]}


@router.get("/v1/index")
def index_info(ctx: Ctx) -> dict[str, Any]:
    """What ``rag info --json`` says about the served index."""
    with ctx.index.lease() as rag:
        data = describe(rag.store, ctx.index.index_dir.name)
        return ctx.names(rag).rewrite(data)


# The two cheap routes run on the event loop, not in the thread pool, so that they answer even
# while every worker thread waits on a slow model.
@router.get("/v1/models")
async def models(ctx: Ctx) -> dict[str, Any]:
    return {
        "object": "list",
        "data": [
            {
                "id": ctx.config.served_model,
                "object": "model",
                "created": 0,
                "owned_by": "rag-toolkit",
            }
        ],
    }


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}
