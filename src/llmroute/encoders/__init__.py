"""Embedding encoders: built-in MiniLM (ONNX) and static models, remote endpoints, and
an on-disk cache for embeddings of fixed texts. See docs/encoders.md."""

from llmroute.encoders.base import Embeddings, Encoder
from llmroute.encoders.builtin import BUILTIN_NAMES, load_builtin
from llmroute.encoders.cached import CachedEncoder
from llmroute.encoders.fake import FakeEncoder
from llmroute.encoders.paths import default_cache_dir
from llmroute.encoders.remote import RemoteEncoder

__all__ = [
    "BUILTIN_NAMES",
    "CachedEncoder",
    "Embeddings",
    "Encoder",
    "FakeEncoder",
    "RemoteEncoder",
    "default_cache_dir",
    "load_builtin",
]
