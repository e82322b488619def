"""OpenAI's stored chat completions (``client.chat.completions.list``, ``retrieve``,
``update``, ``delete``, ``messages.list``), which the gateway does not keep: each call's
error (the list's 405, one completion's 404, as `errors.handle_http` answers them)
says so and what the gateway keeps instead, rather than a bare "not allowed" or "not an
endpoint" that reads like a wrong ``base_url``. Not an empty list (what OpenAI answers
an account that stored nothing): a chat request's ``store: true`` goes on to its model,
whose provider (OpenAI) may keep the completion, so "none" would be false."""

from __future__ import annotations

import re

__all__ = ["NOT_STORED", "not_stored"]

NOT_STORED = "chat_completions_not_stored"  # the errors' code
_LIST = "/v1/chat/completions"
_ONE = re.compile(r"/v1/chat/completions/[^/]+(?:/messages)?")
_WHY = (
    "this gateway keeps no chat completions (OpenAI's stored completions): a request's "
    "'store: true' goes on to the model that serves it, whose provider may keep it. The "
    "gateway keeps responses: POST /v1/responses, with a stored_responses section in its "
    "registry (GET /v1/responses/{id})"
)


def not_stored(method: str, path: str, status: int) -> str | None:
    """Why the gateway answers `status` (405 or 404) to `method` on `path` (without a
    root path), when that is one of OpenAI's stored chat completions calls; else None."""
    if status == 405 and method == "GET" and path == _LIST:
        return _WHY
    if status == 404 and _ONE.fullmatch(path) is not None:
        return _WHY
    return None
