"""Running the service: load the index and the models, then serve with uvicorn until stopped."""

from __future__ import annotations

import logging
from collections.abc import Callable

from rag.serve.app import create_app
from rag.serve.config import ServeConfig
from rag.serve.protocol import protocol_with_header_timeout
from rag.serve.state import WarmIndex
from rag.serve.uploads import Uploads

log = logging.getLogger(__name__)


def serve(config: ServeConfig, *, loaded: Callable[[WarmIndex], None] | None = None) -> None:
    """Serve ``config.index_dir`` at ``config.host:config.port`` until interrupted.

    The index opens and the models load before the port is bound, so a client that reaches the
    port gets answers at once; ``loaded`` is called then, with the warm index.
    """
    import uvicorn

    config.check()
    index = WarmIndex(config.index_dir, config.settings)
    try:
        index.warm_up()
        with index.lease() as rag:
            # A server killed during an upload left its journal: settle it before serving.
            indexed = {d.source: d.sha256 for d in rag.store.documents()}
        Uploads(config.uploads).reconcile(indexed)
        app = create_app(config, index)
        if loaded is not None:
            loaded(index)
        uvicorn.run(
            app,
            host=config.bind_host,
            port=config.port,
            log_level="warning",
            access_log=False,
            timeout_keep_alive=30,
            http=protocol_with_header_timeout(config.header_timeout_s),
        )
    finally:
        index.close()
