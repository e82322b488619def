"""`Router`: runs the decision pipeline and builds the `Decision`.

The pipeline is an ordered tuple of layers (data, not control flow): the routing layers
(rules → intent → difficulty) and then the guards (safety → reasoning gate), which run on
every request, pinned ones included, whatever the routing layers decided. `decide` is
pure: it never calls the network, so it can be unit-tested, benchmarked and replayed.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from llmroute.decision import Decision, LayerSignal, Outcome, Verdict, new_decision_id
from llmroute.encoders.base import Encoder
from llmroute.errors import ConfigError
from llmroute.layers.base import DecisionContext, DecisionLayer, LayerResult
from llmroute.layers.difficulty import DifficultyLayer
from llmroute.registry import LoadedRegistry, load_registry
from llmroute.request import RouteRequest

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from llmroute.gates.build import GateFactory
    from llmroute.sdk.chat import Chat

__all__ = ["DEFAULT_LAYER", "Router", "run_pipeline"]

DEFAULT_LAYER = "default"
RequestInput = str | Mapping[str, Any] | RouteRequest
_CHAT_LOCK = threading.Lock()  # one SDK object per router, even under threads


class Router:
    """Decides which model serves each request.

    >>> router = Router.from_yaml("examples/registry.yaml")  # doctest: +SKIP
    >>> router.decide("translate 'good morning' into French").route  # doctest: +SKIP
    'translate'
    """

    def __init__(
        self,
        loaded: LoadedRegistry,
        *,
        encoder: Encoder | None = None,
        layers: Sequence[DecisionLayer] | None = None,
        cache_dir: Path | None = None,
        encoder_threads: int | None = None,
        metrics: CollectorRegistry | None = None,
    ) -> None:
        # Imported here so `import llmroute` stays light: assembling pulls in the encoder
        # stack (onnx, tokenizers, httpx), which a caller passing `layers=` never needs.
        from llmroute.assemble import build_encoder

        self.loaded = loaded
        self._built: Encoder | None = None  # the encoder made here, closed with the router
        if encoder is None:
            try:
                encoder = build_encoder(loaded.registry, threads=encoder_threads)
            except ConfigError as exc:
                raise loaded.at(exc) from exc
            self._built = encoder
        self.encoder = encoder
        self._chat: Chat | None = None
        try:
            self._assemble(layers, cache_dir)
        except BaseException:
            self._close_encoder()  # a router never made holds its endpoint's client open
            raise
        # The SDK's Prometheus metrics go to this registry (docs/sdk.md#metrics).
        self.metrics_registry = metrics

    def _assemble(self, layers: Sequence[DecisionLayer] | None, cache_dir: Path | None) -> None:
        """The layers (`layers`, else the registry's), the cascades' learned gates and the
        default's verdict."""
        from llmroute.assemble import default_layers, guard_layers

        loaded = self.loaded
        if layers is not None:
            self.routing: tuple[DecisionLayer, ...] = tuple(layers)
            self.guards: tuple[DecisionLayer, ...] = ()
        else:
            base_dir = loaded.base_dir
            try:
                self.routing = default_layers(
                    loaded.registry, self.encoder, cache_dir=cache_dir, base_dir=base_dir
                )
                self.guards = guard_layers(loaded.registry, self.encoder, base_dir=base_dir)
            except ConfigError as exc:
                raise loaded.at(exc) from exc
        self.layers: tuple[DecisionLayer, ...] = (*self.routing, *self.guards)
        self._gates = self._learned_gates()
        default = loaded.registry.default
        self._default = Verdict(
            route=DEFAULT_LAYER, model=default.target, confidence=0.0, reason="no layer decided"
        )
        self._window = loaded.registry.intent.window

    @classmethod
    def from_yaml(
        cls,
        path: str | os.PathLike[str],
        *,
        encoder: Encoder | None = None,
        cache_dir: Path | None = None,
        encoder_threads: int | None = None,
        metrics: CollectorRegistry | None = None,
    ) -> Router:
        """`encoder_threads` caps a built-in encoder's threads per call (default: up to
        four cores). `metrics`: a ``prometheus_client.CollectorRegistry`` that the SDK's
        calls are counted in (the gateway's ``llmroute_*`` metrics)."""
        return cls(
            load_registry(path),
            encoder=encoder,
            cache_dir=cache_dir,
            encoder_threads=encoder_threads,
            metrics=metrics,
        )

    def _learned_gates(self) -> GateFactory | None:
        """The cascade gates, their learned models loaded now when the registry names
        any (a few small files; `ConfigError` for a missing or wrong artifact), so that
        a registry `serve` refuses is refused here too, not escalated on every request.
        None otherwise: building gates pulls in dispatch, which `decide` never needs."""
        if not any(
            gate.kind == "learned"
            for route in self.loaded.registry.routes
            if route.cascade is not None
            for _, gate in route.cascade.written_gates()
        ):
            return None
        from llmroute.gates.build import GateFactory

        gates = GateFactory(
            self.loaded.registry, encoder=self.encoder, base_dir=self.loaded.base_dir
        )
        try:
            gates.preload()
        except ConfigError as exc:
            raise self.loaded.at(exc) from exc
        return gates

    def gate_factory(self) -> GateFactory:
        """The cascades' gates for this router's registry, with its encoder (learned
        models already loaded when it names any)."""
        if self._gates is not None:
            return self._gates
        from llmroute.gates.build import GateFactory

        return GateFactory(
            self.loaded.registry, encoder=self.encoder, base_dir=self.loaded.base_dir
        )

    @property
    def version(self) -> str:
        return self.loaded.version

    @property
    def chat(self) -> Chat:
        """The OpenAI-style SDK: ``router.chat.completions.create(...)`` (docs/sdk.md)."""
        # Imported here: the SDK pulls in dispatch and aiohttp, which `decide` never needs.
        from llmroute.sdk.chat import Chat

        with _CHAT_LOCK:
            if self._chat is None:
                self._chat = Chat(self)
            return self._chat

    def close(self) -> None:
        """Release what the SDK holds (its loop thread, its connections), and the client
        of an embeddings endpoint the router built as its encoder (an `encoder` passed in
        is the caller's to close); blocking, so in a running event loop it warns and waits
        in a thread (`Chat.close`)."""
        try:
            if self._chat is not None:
                self._chat.close()
        finally:
            self._close_encoder()

    async def aclose(self) -> None:
        """As `close`, and close the calling loop's connections first."""
        try:
            if self._chat is not None:
                await self._chat.aclose()
        finally:
            self._close_encoder()

    def _close_encoder(self) -> None:
        close = getattr(self._built, "close", None)  # the built-in encoders hold nothing
        if callable(close):
            close()

    def __enter__(self) -> Router:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    async def __aenter__(self) -> Router:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def request(
        self, request: RequestInput, *, headers: Mapping[str, str] | None = None
    ) -> RouteRequest:
        return RouteRequest.from_input(request, headers=headers, window=self._window)

    def decide(
        self,
        request: RequestInput,
        *,
        headers: Mapping[str, str] | None = None,
        layers: Sequence[DecisionLayer] | None = None,
    ) -> Decision:
        """Route one request (a string, an OpenAI chat body, or a `RouteRequest`);
        `layers` replaces the routing layers for this call (a pinned model,
        ``router-<name>-<t>``); the guards run either way.

        A body's ``model`` is honoured as the SDK and the gateway honour it: a route or
        pool model name (or an alias of one) pins it, ``router-<name>-<t>`` asks the
        difficulty router alone, and a name the registry does not know raises
        `ModelNotFound`; ``auto`` (or no ``model``) routes."""
        if layers is None and _names_a_model(request):
            # Imported here: planning imports this module.
            from llmroute.dispatch.plan import plan_request

            assert isinstance(request, Mapping)
            return plan_request(self, request, dict(headers or {})).decision
        return self.route(request, headers=headers, layers=layers)

    def route(
        self,
        request: RequestInput,
        *,
        headers: Mapping[str, str] | None = None,
        layers: Sequence[DecisionLayer] | None = None,
    ) -> Decision:
        """`decide`, the body's ``model`` left aside: what ``auto`` gets."""
        start = time.perf_counter_ns()
        ctx = DecisionContext(self.request(request, headers=headers), self.encoder.encode)
        pipeline = self.layers if layers is None else (*layers, *self.guards)
        return run_pipeline(ctx, pipeline, self._default, self.version, start)

    @property
    def difficulty(self) -> DifficultyLayer | None:
        """The pipeline's difficulty layer, when the registry declares one."""
        for layer in self.layers:
            if isinstance(layer, DifficultyLayer):
                return layer
        return None

    def decide_many(
        self,
        requests: Sequence[RequestInput],
        *,
        headers: Mapping[str, str] | None = None,
        layers: Sequence[DecisionLayer] | None = None,
    ) -> list[Decision]:
        """Route a batch: one encoder call for all texts, then the layers per request
        (`layers`, as `decide`'s, for every one of them).

        The batch's encoder time is shared out evenly: each decision's `encode_us` is its
        share, and its `total_us` that share plus its own layers' time.
        """
        if layers is None and any(_names_a_model(r) for r in requests):
            return [self.decide(r, headers=headers) for r in requests]  # pinned: alone
        routed = [self.request(r, headers=headers) for r in requests]
        if not routed:
            return []
        start = time.perf_counter_ns()
        vectors = self.encoder.encode([r.text for r in routed])
        share_us = (time.perf_counter_ns() - start) / 1000.0 / len(routed)
        pipeline = self.layers if layers is None else (*layers, *self.guards)
        decisions = []
        for request, vector in zip(routed, vectors, strict=True):
            t0 = time.perf_counter_ns() - round(share_us * 1000)  # its share counts in its total
            ctx = DecisionContext(request, self.encoder.encode, vector)
            ctx.encode_us = share_us
            decisions.append(run_pipeline(ctx, pipeline, self._default, self.version, t0))
        return decisions


def _names_a_model(request: RequestInput) -> bool:
    """Whether `request` is a body whose ``model`` is something other than ``auto``."""
    if not isinstance(request, Mapping):
        return False
    model = request.get("model")
    return model is not None and model != "auto"


def run_pipeline(
    ctx: DecisionContext,
    layers: Sequence[DecisionLayer],
    default: Verdict,
    version: str,
    start_ns: int,
    clock: Callable[[], int] = time.perf_counter_ns,
) -> Decision:
    """Run `layers` in order over `ctx` and build the Decision.

    The first verdict wins; later layers are skipped unless they `always_run`, in which
    case their verdict overrides. With no verdict, `default` applies. The guards' outcomes
    then apply: the reasoning tier replaces the model, and a safety reroute replaces both.
    """
    signals: list[LayerSignal] = []
    decided_by: str | None = None
    pass_reason: str | None = None
    pass_margin: float | None = None
    for layer in layers:
        if ctx.verdict is not None and not layer.always_runs:
            signals.append(LayerSignal(layer.name, Outcome.SKIPPED, 0.0))
            continue
        encode_before = ctx.encode_us
        t0 = clock()
        result = layer.evaluate(ctx)
        # The shared embedding is charged to the encoder, not to the layer that asked first.
        elapsed = (clock() - t0) / 1000.0 - (ctx.encode_us - encode_before)
        ctx.results[layer.name] = result
        signals.append(_signal(layer.name, result, elapsed))
        if result.verdict is not None:
            ctx.verdict, decided_by = result.verdict, layer.name
        elif isinstance(reason := result.detail.get("reason"), str):
            pass_reason = reason
            margin = result.detail.get("margin")
            pass_margin = margin if isinstance(margin, float) else pass_margin
    verdict = ctx.verdict
    if verdict is None or decided_by is None:
        reason = default.reason if pass_reason is None else f"default: {pass_reason}"
        verdict = Verdict(default.route, default.model, 0.0, reason, pass_margin)
        decided_by = DEFAULT_LAYER
    verdict = _guarded(verdict, ctx)
    return Decision(
        id=new_decision_id(),
        route=verdict.route,
        model=verdict.model,
        layer=decided_by,
        confidence=verdict.confidence,
        margin=verdict.margin,
        reason=verdict.reason,
        registry_version=version,
        signals=tuple(signals),
        encode_us=ctx.encode_us,
        total_us=(clock() - start_ns) / 1000.0,
        safety=ctx.safety,
        reasoning=ctx.reasoning,
        embedding=ctx.embedded,
        embedded_chars=len(ctx.request.text),
        routed=None if ctx.request.body is None else (id(ctx.request.body), ctx.request.text),
    )


def _guarded(verdict: Verdict, ctx: DecisionContext) -> Verdict:
    """The verdict after the guards: a reasoning tier, then a safety reroute, win."""
    model, reason = verdict.model, verdict.reason
    if ctx.reasoning is not None and ctx.reasoning.tier is not None:
        model, reason = ctx.reasoning.tier, f"{reason}; reasoning tier ({ctx.reasoning.reason})"
    if ctx.safety is not None and ctx.safety.model is not None:
        fired = ", ".join(ctx.safety.decisive or ctx.safety.fired) or "policy"
        model, reason = ctx.safety.model, f"{reason}; rerouted by safety ({fired})"
    if model == verdict.model:
        return verdict
    return Verdict(verdict.route, model, verdict.confidence, reason, verdict.margin)


def _signal(name: str, result: LayerResult, elapsed_us: float) -> LayerSignal:
    return LayerSignal(
        layer=name,
        outcome=result.outcome,
        elapsed_us=max(elapsed_us, 0.0),
        verdict=result.verdict,
        candidates=result.candidates,
        detail=result.detail,
    )
