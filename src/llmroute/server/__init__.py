"""The OpenAI-compatible gateway: ``llmroute serve``.

`create_app` and `app_from_env` live in `llmroute.server.app`; this package imports
nothing itself, so the CLI can read `llmroute.server.settings` without the web stack.
"""
