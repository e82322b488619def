"""`llmroute serve`: run the OpenAI-compatible gateway with uvicorn."""

from __future__ import annotations

import os
from typing import Annotated

import typer

from llmroute.cli._app import RegistryOption, app, resolve_registry
from llmroute.registry import load_registry
from llmroute.server.settings import DEFAULT_MAX_BODY_BYTES, MAX_BODY_ENV, REGISTRY_ENV


@app.command()
def serve(
    registry: RegistryOption = None,
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.", min=0, max=65535)] = 8000,
    workers: Annotated[int, typer.Option(help="Worker processes.", min=1)] = 1,
    max_body_bytes: Annotated[
        int, typer.Option(help="Largest request body accepted (413 beyond).", min=1)
    ] = DEFAULT_MAX_BODY_BYTES,
) -> None:
    """Serve /v1/chat/completions: each request is routed, then sent to its model."""
    import uvicorn

    path = resolve_registry(registry)
    load_registry(path)  # a bad registry fails here with one clean line, not a traceback
    if workers > 1:
        # Worker processes import the factory by name and read their settings from the
        # environment they inherit.
        os.environ[REGISTRY_ENV] = str(path)
        os.environ[MAX_BODY_ENV] = str(max_body_bytes)
        uvicorn.run(
            "llmroute.server.app:app_from_env", factory=True, host=host, port=port, workers=workers
        )
        return
    from llmroute.server.app import create_app

    uvicorn.run(create_app(str(path), max_body_bytes=max_body_bytes), host=host, port=port)
