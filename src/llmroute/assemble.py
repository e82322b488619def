"""From a validated registry to live components: the encoder and the default pipeline.

Everything slow happens here, once, at load: loading the encoder, embedding route
examples (through an on-disk cache keyed by encoder identity and text) and training the
intent head (cached by a hash of everything it depends on).
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from llmroute.encoders import CachedEncoder, RemoteEncoder, default_cache_dir, load_builtin
from llmroute.encoders.base import Encoder
from llmroute.encoders.scripts import ANY, BUILTIN_SCRIPTS, ScriptCheck
from llmroute.encoders.tokenize import CHARS_PER_TOKEN
from llmroute.errors import ConfigError
from llmroute.layers.base import DecisionLayer
from llmroute.layers.difficulty import DifficultyLayer
from llmroute.layers.intent import IntentLayer
from llmroute.layers.rules import RulesLayer
from llmroute.registry import BuiltinEncoderSpec, Registry
from llmroute.registry.schema import (
    EncoderSpec,
    OpenAIEncoderSpec,
    check_credential_text,
    env_headers,
)
from llmroute.scoring.heads import CentroidHead, IntentHead, KnnHead, LinearHead, labels_from
from llmroute.scoring.logreg import SoftmaxModel

__all__ = [
    "SCRIPT_WINDOW",
    "build_encoder",
    "build_intent_layer",
    "check_encoder_env",
    "default_layers",
    "encoder_scripts",
    "make_head",
    "script_check",
    "script_check_for",
]

log = logging.getLogger(__name__)
_HEAD_FORMAT = 1
SCRIPT_WINDOW = 256 * CHARS_PER_TOKEN
"""Characters of a request checked for scripts an endpoint declared it does not read."""


def build_encoder(registry: Registry, *, threads: int | None = None) -> Encoder:
    """The registry's encoder; `threads` caps a built-in encoder's threads per call
    (default: up to four cores; a gateway worker uses one)."""
    spec = registry.encoder
    if isinstance(spec, BuiltinEncoderSpec):
        return load_builtin(
            spec.name, max_tokens=spec.max_tokens, truncate=spec.truncate, threads=threads
        )
    check_encoder_env(spec, os.environ)
    return RemoteEncoder(
        base_url=str(spec.base_url),
        model=spec.model,
        api_key_env=spec.api_key_env,
        headers={**spec.headers, **env_headers(spec.headers_env, os.environ)},
        batch_size=spec.batch_size,
        timeout=spec.timeout_s,
        dimensions=spec.dimensions,
    )


def check_encoder_env(spec: OpenAIEncoderSpec, environ: Mapping[str, str]) -> None:
    """`ConfigError` at the field of the first of an embeddings endpoint's credentials
    (`api_key_env`, `headers_env`) whose variable is unset or empty, or holds a control
    character (httpx's refusal quoted the value) or one past ASCII (a traceback): an
    encoder without them answers nothing, so neither `serve` nor `route` goes on
    (`registry check` warns)."""
    if spec.api_key_env and not environ.get(spec.api_key_env):
        raise ConfigError(
            f"environment variable {spec.api_key_env} (the encoder's API key) is not set",
            field="encoder.api_key_env",
        )
    for header, name in spec.headers_env.items():
        if not environ.get(name):
            raise ConfigError(
                f"environment variable {name} (the encoder's {header} header) is not set",
                field=f"encoder.headers_env.{header}",
            )
    check_credential_text("encoder", spec.api_key_env, spec.headers_env, environ, ascii_only=True)


def default_layers(
    registry: Registry,
    encoder: Encoder,
    *,
    cache_dir: Path | None = None,
    base_dir: Path | None = None,
) -> tuple[DecisionLayer, ...]:
    """The standard pipeline for a registry: rules (when it has any), intent, then the
    difficulty router for what intent leaves to the default (when one is declared)."""
    layers: list[DecisionLayer] = []
    if registry.rules:
        layers.append(RulesLayer(registry))
    layers.append(build_intent_layer(registry, encoder, cache_dir=cache_dir))
    if registry.default.difficulty is not None:
        with _field("default.difficulty.router"):
            layers.append(build_difficulty_layer(registry, encoder, base_dir or Path.cwd()))
    return tuple(layers)


@contextmanager
def _field(name: str) -> Iterator[None]:
    """A `ConfigError` from loading what field `name` names (an artifact's directory)
    said as that field's (`LoadedRegistry.at` adds the registry's file and line)."""
    try:
        yield
    except ConfigError as exc:
        if exc.field is not None:
            raise
        raise ConfigError(str(exc), field=name) from exc


def guard_layers(
    registry: Registry, encoder: Encoder, *, base_dir: Path | None = None
) -> tuple[DecisionLayer, ...]:
    """The layers that run on every request after routing: safety, then the reasoning
    gate, each when the registry has its section."""
    layers: list[DecisionLayer] = []
    base = base_dir or Path.cwd()
    if registry.safety is not None:
        from llmroute.layers.safety import build_safety_layer

        with _field("safety.injection.artifact"):
            layers.append(build_safety_layer(registry, encoder, base))
    if registry.reasoning is not None and registry.reasoning.enabled:
        from llmroute.layers.reasoning import build_reasoning_layer

        with _field("reasoning.scorer"):
            layers.append(build_reasoning_layer(registry, encoder, base))
    return tuple(layers)


def build_difficulty_layer(registry: Registry, encoder: Encoder, base_dir: Path) -> DifficultyLayer:
    """The `default.difficulty` router, loaded from its directory (relative to the
    registry file) and refused when it was trained with another encoder."""
    from llmroute.difficulty.artifact import ARRAYS_FILE, load_router, read_meta
    from llmroute.difficulty.calibration import threshold_from
    from llmroute.difficulty.routers import check_input_dim

    spec = registry.default.difficulty
    assert spec is not None
    directory = base_dir / spec.router
    router = load_router(directory, encoder_identity=encoder.identity)
    check_input_dim(router, encoder.dim, file=str(directory / ARRAYS_FILE))  # not at request 1
    threshold = spec.threshold
    if threshold is None:
        assert spec.strong_share is not None
        threshold = threshold_from(read_meta(directory), spec.strong_share)
    return DifficultyLayer(
        router,
        strong=spec.strong,
        weak=spec.weak,
        threshold=threshold,
        scripts=script_check(registry, encoder),
        unread=spec.unread,
    )


def build_intent_layer(
    registry: Registry, encoder: Encoder, *, cache_dir: Path | None = None
) -> IntentLayer:
    cache = cache_dir if cache_dir is not None else default_cache_dir()
    texts: list[str] = []
    owner: list[int] = []
    for index, route in enumerate(registry.routes):
        texts.extend(route.examples)
        owner.extend([index] * len(route.examples))
    oos = list(registry.intent.out_of_scope)
    texts.extend(oos)
    owner.extend([len(registry.routes)] * len(oos))
    n_classes = len(registry.routes) + (1 if oos else 0)

    vectors = CachedEncoder(encoder, cache / "embeddings").encode(texts)
    labels = labels_from(owner)
    settings = registry.intent
    head: IntentHead
    if settings.method == "linear":
        # the identity and how its vectors were made (int8 once encoded in batches)
        made = encoder.identity + getattr(encoder, "vectors", "")
        head = _linear_head(made, texts, labels, vectors, n_classes, cache / "heads")
    else:
        head = make_head(settings.method, vectors, labels, n_classes, k=settings.k)
    return IntentLayer(
        head,
        routes=[r.name for r in registry.routes],
        targets=[r.target for r in registry.routes],
        thresholds=[
            r.threshold if r.threshold is not None else settings.threshold for r in registry.routes
        ],
        has_out_of_scope=bool(oos),
        scripts=script_check(registry, encoder),
    )


def script_check(registry: Registry, encoder: Encoder) -> ScriptCheck | None:
    """The check for text the encoder does not read (`encoder_scripts`) the layers that
    read the embedding share; None when it reads any script."""
    reads = encoder_scripts(registry.encoder, encoder)
    return None if reads is None else script_check_for(registry.encoder, reads)


def script_check_for(spec: EncoderSpec, reads: Sequence[str]) -> ScriptCheck:
    """A check of the characters the encoder `spec` reads: ``max_tokens`` ×
    `CHARS_PER_TOKEN` at the ends ``truncate`` keeps for a built-in one, the first
    `SCRIPT_WINDOW` of an endpoint's."""
    if isinstance(spec, BuiltinEncoderSpec):
        window = spec.max_tokens * CHARS_PER_TOKEN
        return _shared_check(tuple(reads), window, spec.truncate)
    return _shared_check(tuple(reads), SCRIPT_WINDOW, "head")


@functools.lru_cache(maxsize=8)
def _shared_check(reads: tuple[str, ...], window: int, truncate: str) -> ScriptCheck:
    """One check per setting, shared by the intent layer, the difficulty router, the
    safety layer and the reasoning gate of a registry (and its reloads): building one
    compiles a regex over the Unicode table (~3 ms). Its buffers and its last count are
    per thread, so sharing it is safe, and the layers count a request's letters once."""
    return ScriptCheck(reads, window=window, truncate=truncate)


def encoder_scripts(spec: EncoderSpec, encoder: Encoder | None = None) -> tuple[str, ...] | None:
    """The scripts an encoder reads: ``spec.scripts`` when set (None for ``any``), else
    what `encoder` declares, else (no encoder at hand) what the kind of encoder does (the
    built-ins read Latin; an endpoint, anything)."""
    if spec.scripts == ANY:
        return None
    if spec.scripts is not None:
        return tuple(spec.scripts)
    if encoder is None:
        return BUILTIN_SCRIPTS if isinstance(spec, BuiltinEncoderSpec) else None
    declared = getattr(encoder, "scripts", None)
    return tuple(declared) if declared is not None else None


def make_head(
    method: str, vectors: np.ndarray, labels: np.ndarray, n_classes: int, *, k: int = 5
) -> IntentHead:
    """The intent head `method` names, built from example vectors (no cache)."""
    if method == "centroid":
        return CentroidHead(vectors, labels, n_classes)
    if method == "knn":
        return KnnHead(vectors, labels, n_classes, k=k)
    return LinearHead.train(vectors, labels, n_classes)


def _linear_head(
    identity: str,
    texts: list[str],
    labels: np.ndarray,
    vectors: np.ndarray,
    n_classes: int,
    directory: Path,
) -> LinearHead:
    """Train the softmax head, or load it when the same examples were trained before.

    With hundreds of routes training takes tens of seconds of every core, and the
    workers of `serve --workers` reload at once: a lock file per head makes one of them
    train while the others wait and then read its result, instead of each training the
    same head side by side."""
    key_material = json.dumps([_HEAD_FORMAT, identity, n_classes, texts, labels.tolist()])
    key = hashlib.sha256(key_material.encode()).hexdigest()[:32]
    path = directory / f"linear-{key}.npz"
    cached = _cached_head(path)
    if cached is not None:
        return cached
    with _training_lock(directory / f"linear-{key}.lock"):
        cached = _cached_head(path)  # trained by whoever held the lock before us
        if cached is not None:
            return cached
        head = LinearHead.train(vectors, labels, n_classes)
        try:
            with tempfile.NamedTemporaryFile(dir=directory, suffix=".npz", delete=False) as tmp:
                np.savez(tmp, weights=head.model.weights, bias=head.model.bias)
            os.replace(tmp.name, path)
        except OSError as exc:  # a read-only cache only costs the retraining next time
            log.warning("could not cache the intent head in %s: %s", directory, exc)
    return head


def _cached_head(path: Path) -> LinearHead | None:
    if not path.exists():
        return None
    try:
        with np.load(path) as data:
            return LinearHead(SoftmaxModel(data["weights"], data["bias"]))
    except (OSError, ValueError, KeyError) as exc:
        log.warning("ignoring unreadable cached intent head %s: %s", path, exc)
        return None


@contextmanager
def _training_lock(path: Path) -> Iterator[None]:
    """An exclusive ``flock`` on `path` (blocking) where the platform has one and the
    cache directory is writable; otherwise no lock (training twice is only slower)."""
    try:
        import fcntl
    except ImportError:  # not POSIX
        yield
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle = path.open("a")
    except OSError:  # a read-only cache dir
        yield
        return
    with handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
