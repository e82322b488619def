"""The Python SDK: ``router.chat.completions.create(...)``, the OpenAI client's chat API
routed and dispatched in-process. Reference: docs/sdk.md."""

from llmroute.sdk.chat import Chat, Completions
from llmroute.sdk.streams import AsyncStream, Stream

__all__ = ["AsyncStream", "Chat", "Completions", "Stream"]
