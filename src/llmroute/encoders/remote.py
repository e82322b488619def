"""An encoder backed by any OpenAI-compatible ``POST {base_url}/embeddings`` endpoint.

One pooled httpx client per encoder; texts are deduplicated, looked up in an in-memory
LRU cache and sent in batches. The API key is read from the environment variable whose
*name* is configured; it is only ever placed in the Authorization header and is redacted
from any error text, so it cannot leak through messages, logs or `repr`. So are a base
URL's ``user:password@`` credentials (which httpx sends as ``Authorization: Basic``):
the password, the pair and the Basic value are cut from the URL messages name and from
what the server answers.
"""

from __future__ import annotations

import base64
import functools
import os
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

import numpy as np
import numpy.typing as npt

from llmroute.encoders.base import Embeddings, masked_credentials, without_credentials
from llmroute.encoders.minilm import normalise_rows
from llmroute.errors import ConfigError, EncoderError

if TYPE_CHECKING:
    import httpx

__all__ = ["RemoteEncoder"]

_Vec = npt.NDArray[np.float32]
_SHORTEST_SECRET = 4  # a shorter user alone would cut letters out of every message


def _url_credentials(base_url: str) -> list[str]:
    """What a base URL's ``user:password@`` sends, for error text to withhold: the
    password (decoded and as written), the ``user:password`` pair and the Basic value
    httpx makes of it; without a password, the user (a token: ``https://TOKEN@host``)."""
    parts = urlsplit(base_url)
    if parts.username is None:
        return []
    user = unquote(parts.username)
    password = unquote(parts.password) if parts.password is not None else ""
    pair = f"{user}:{password}"
    sent = [base64.b64encode(pair.encode()).decode()]
    sent += [pair, password, parts.password or ""] if password else [user]
    return [secret for secret in sent if len(secret) >= _SHORTEST_SECRET]


def _has_credentials(base_url: str) -> bool:
    """Whether httpx sends the base URL's ``user:password@`` (as Basic) on each request,
    over any ``Authorization`` header the client was given."""
    parts = urlsplit(base_url)
    return bool(parts.username or parts.password)


class RemoteEncoder:
    """Embeddings from a remote service; identity is ``openai:<base_url>#<model>``."""

    remote = True  # its calls wait on the network: callers on an event loop use a thread

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key_env: str | None = None,
        headers: Mapping[str, str] | None = None,
        batch_size: int = 64,
        timeout: float = 10.0,
        dimensions: int | None = None,
        cache_size: int = 4096,
    ) -> None:
        if batch_size < 1:
            raise ConfigError(f"batch_size must be positive, not {batch_size}")
        self._base_url = base_url.rstrip("/")
        self._endpoint = f"{self._base_url}/embeddings"
        self._model = model
        self._batch_size = batch_size
        self._dimensions = dimensions
        self._dim = dimensions
        self._key = ""
        self._withheld = _url_credentials(self._base_url)
        self._shown_endpoint = self._redact(masked_credentials(self._endpoint))  # messages name it
        import httpx  # here: the built-in encoders (`llmroute route`) need no HTTP client

        all_headers = dict(headers or {})
        if _has_credentials(self._base_url) and (
            api_key_env or any(name.lower() == "authorization" for name in all_headers)
        ):
            # httpx sends the URL's credentials (Basic) in place of our header
            raise ConfigError(
                "the encoder's base_url carries credentials (user:password@) and an API key "
                "or Authorization header is given too: one request sends one Authorization; "
                "give one of them"
            )
        if api_key_env:
            self._key = os.environ.get(api_key_env, "")
            if not self._key:
                raise ConfigError(f"environment variable {api_key_env} (API key) is not set")
            all_headers["Authorization"] = f"Bearer {self._key}"
        # opened again by a call after `close` (its router's): the router stays usable
        self._new_client = functools.partial(httpx.Client, headers=all_headers, timeout=timeout)
        self._client = self._new_client()
        # what a call catches, kept with the client: a call runs no import statement
        self._timed_out: type[Exception] = httpx.TimeoutException
        self._failed: type[Exception] = httpx.HTTPError
        self._cache: OrderedDict[str, _Vec] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()
        self.requests_sent = 0

    def __repr__(self) -> str:
        shown = self._redact(masked_credentials(self._base_url))
        return f"RemoteEncoder(base_url={shown!r}, model={self._model!r})"

    @property
    def identity(self) -> str:
        dims = f"@{self._dimensions}" if self._dimensions else ""
        return f"openai:{without_credentials(self._base_url)}#{self._model}{dims}"

    @property
    def dim(self) -> int:
        """Known from `dimensions` or the first response; probes the endpoint otherwise."""
        if self._dim is None:
            self.encode(["dimension probe"])
        assert self._dim is not None
        return self._dim

    def close(self) -> None:
        with self._lock:
            self._client.close()

    def _open_client(self) -> httpx.Client:
        with self._lock:
            if self._client.is_closed:
                self._client = self._new_client()
            return self._client

    def _redact(self, text: str) -> str:
        secrets = [self._key, *self._withheld] if self._key else self._withheld
        for secret in sorted(secrets, key=len, reverse=True):
            text = text.replace(secret, "***")
        return text

    def _post(self, texts: list[str]) -> Any:
        body: dict[str, Any] = {"model": self._model, "input": texts}
        if self._dimensions:
            body["dimensions"] = self._dimensions
        where = f"embeddings endpoint {self._shown_endpoint}"
        try:
            response = self._open_client().post(self._endpoint, json=body)
        except self._timed_out as exc:
            raise EncoderError(f"{where} timed out ({type(exc).__name__})") from None
        except self._failed as exc:
            raise EncoderError(f"{where} unreachable: {self._redact(str(exc))}") from None
        self.requests_sent += 1
        if not response.is_success:
            snippet = self._redact(response.text[:200])
            raise EncoderError(f"{where} returned HTTP {response.status_code}: {snippet}")
        try:
            return response.json()
        except ValueError:
            raise EncoderError(f"{where} returned malformed JSON") from None

    def _parse(self, payload: Any, count: int) -> npt.NDArray[np.float32]:
        try:
            items = sorted(payload["data"], key=lambda item: int(item.get("index", 0)))
            matrix = np.asarray([item["embedding"] for item in items], dtype=np.float32)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise EncoderError(
                f"embeddings endpoint {self._shown_endpoint} returned an unexpected body ({exc!r})"
            ) from None
        if matrix.ndim != 2 or matrix.shape[0] != count:
            raise EncoderError(
                f"embeddings endpoint {self._shown_endpoint} returned {matrix.shape} "
                f"for {count} texts"
            )
        if self._dim is not None and matrix.shape[1] != self._dim:
            raise EncoderError(f"expected {self._dim}-d embeddings, got {matrix.shape[1]}-d")
        self._dim = int(matrix.shape[1])
        return normalise_rows(matrix)

    def _fetch(self, texts: list[str]) -> None:
        for start in range(0, len(texts), self._batch_size):
            batch = texts[start : start + self._batch_size]
            vectors = self._parse(self._post(batch), len(batch))
            with self._lock:
                for text, vec in zip(batch, vectors, strict=True):
                    self._cache[text] = vec
                while len(self._cache) > self._cache_size:
                    self._cache.popitem(last=False)

    def encode(self, texts: Sequence[str]) -> Embeddings:
        wanted = [t for t in dict.fromkeys(texts) if t.strip()]
        with self._lock:
            missing = [t for t in wanted if t not in self._cache]
        if missing:
            self._fetch(missing)
        found: dict[str, _Vec] = {}
        with self._lock:
            for t in wanted:
                vec = self._cache.get(t)
                if vec is not None:
                    self._cache.move_to_end(t)
                    found[t] = vec
        if len(found) < len(wanted):  # evicted by a concurrent call: fetch the rest now
            rest = [t for t in wanted if t not in found]
            self._fetch(rest)
            with self._lock:
                found.update((t, self._cache[t]) for t in rest if t in self._cache)
        dim = self._dim if self._dim is not None else self.dim
        out = np.zeros((len(texts), dim), dtype=np.float32)
        for row, text in enumerate(texts):
            vec = found.get(text)
            if vec is not None:
                out[row] = vec
        return out
