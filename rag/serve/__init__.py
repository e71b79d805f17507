"""The HTTP service (``rag serve``): an OpenAI-compatible API with citations, and a page to ask from.

One process keeps the embedder, the index and the LLM backend warm, so a question costs its
retrieval and generation only. Modules: ``config`` (what a server is started with, and the rule
that a non-loopback address needs an API key), ``state`` (the open index, swapped to a new
snapshot after a write commits), ``schemas`` (request and response bodies), ``guards`` (the API
key, body and upload size limits), ``routes_query`` (chat completions, ask, retrieve),
``routes_documents`` (uploads, deletions, the index's description), ``uploads`` (staging an upload
under a name of the server's own), ``completions`` (the OpenAI chat completion format), ``app``
(the FastAPI application) and ``server`` (uvicorn). Needs the ``serve`` extra; ``import rag`` never
imports this package.
"""
