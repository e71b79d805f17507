"""The OpenAPI description of the service, as clients and tools read it at ``/openapi.json``.

FastAPI derives the request bodies and the 200 responses from the routes. What it cannot see is
added here: the error statuses every route can answer (in OpenAI's error shape, not FastAPI's own
422 body), the multipart body of an upload, the event stream of a streamed chat completion, and,
on a server with a key, the bearer security scheme (the routes that answer without the key say
so).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from rag.serve.guards import OPEN_PATHS


class ErrorDetail(BaseModel):
    message: str
    type: str
    code: int
    request_id: str | None = None


class ErrorBody(BaseModel):
    """Every error: OpenAI's shape, with the id the server logged the details under."""

    error: ErrorDetail


# The statuses any route may answer besides its own: the request is malformed (400), lacks the
# key (401), is refused by the origin, host or override rules (403), names a route or method
# that is not there (404, 405), is over a limit (413), does not validate (422), or meets a busy
# (429, 409) or broken (500, 503) server.
_COMMON = (400, 401, 403, 404, 405, 409, 413, 422, 429, 500, 503)
_OWN = {("/v1/documents", "post"): (415,)}


def _upload_body(max_files: int) -> dict[str, Any]:
    return {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["files"],
                    "properties": {
                        "files": {
                            "type": "array",
                            "minItems": 1,
                            "maxItems": max_files,
                            "items": {"type": "string", "format": "binary"},
                            "description": "The files to ingest (PDF, DOCX, HTML, text, markdown).",
                        }
                    },
                }
            }
        },
    }


# A streamed chat completion (stream: true): server-sent events whose data is a chunk in OpenAI's
# format, or [DONE].
_EVENT = {
    "type": "object",
    "required": ["data"],
    "properties": {"data": {"type": "string"}, "event": {"type": "string"}},
}


def describe(base: dict[str, Any], *, keyed: bool, max_files: int) -> dict[str, Any]:
    """``base`` (FastAPI's schema) with what the routes alone do not say."""
    schema = dict(base)
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    for name, model in (("ErrorBody", ErrorBody), ("ErrorDetail", ErrorDetail)):
        found = model.model_json_schema(ref_template="#/components/schemas/{model}")
        found.pop("$defs", None)
        components[name] = found
    components.pop("HTTPValidationError", None)
    components.pop("ValidationError", None)
    error = {
        "description": "An error",
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}},
    }
    if keyed:
        schema["components"]["securitySchemes"] = {
            "bearer": {"type": "http", "scheme": "bearer", "description": "RAG_API_KEY"}
        }
        schema["security"] = [{"bearer": []}]
    for path, operations in schema.get("paths", {}).items():
        for method, op in operations.items():
            responses = op.setdefault("responses", {})
            for status in (*_COMMON, *_OWN.get((path, method), ())):
                responses[str(status)] = error
            if keyed and path in OPEN_PATHS:
                op["security"] = []
                responses.pop("401", None)
            if (path, method) == ("/v1/documents", "post"):
                op["requestBody"] = _upload_body(max_files)
            if (path, method) == ("/v1/chat/completions", "post"):
                ok = responses.setdefault("200", {"description": "The answer"})
                ok.setdefault("content", {})["text/event-stream"] = {"schema": _EVENT}
    return schema
