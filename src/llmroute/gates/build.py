"""`GateFactory`: a cascade tier's gate settings (`registry.schema.Gate`) → gates.

Gates are cheap to build and are built per request, except for what is expensive: a
learned gate's model is loaded once per artifact (``builtin`` or a directory relative to
the registry file), in a worker thread on first use, or up front with `preload`. A
learned gate needs the router's encoder; a factory built without one fails such gates
(and the cascade escalates).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import anyio.to_thread
import numpy as np
import numpy.typing as npt

from llmroute.encoders.base import Encoder
from llmroute.errors import ConfigError
from llmroute.gates.base import GateVerdict, ModelCall, QualityGate, TierAnswer
from llmroute.gates.consistency import SelfConsistencyGate
from llmroute.gates.heuristic import HeuristicGate
from llmroute.gates.verifier import VerifierGate
from llmroute.registry._paths import format_path
from llmroute.registry.schema import Gate, Registry

__all__ = ["GateFactory", "LearnedGate", "ScoresAnswers", "last_user_text"]

log = logging.getLogger("llmroute.gates")


class ScoresAnswers(Protocol):
    """What the learned gate needs of `llmroute.gates.learned.LearnedGateModel`."""

    @property
    def threshold(self) -> float: ...

    def score(self, prompts: Sequence[str], answers: Sequence[str]) -> npt.NDArray[Any]: ...


def last_user_text(request: Mapping[str, Any]) -> str:
    """The text of the request's last user message ("" when there is none)."""
    for message in reversed(request.get("messages") or ()):
        if not isinstance(message, Mapping) or message.get("role") != "user":
            continue
        content = message.get("content")
        if isinstance(content, str):
            return content
        if isinstance(content, list):
            return " ".join(
                str(p.get("text", "")) for p in content if isinstance(p, Mapping) and "text" in p
            )
        return ""
    return ""


class LearnedGate:
    """Scores (last user message, answer) with a learned model, in a worker thread; the
    request escalates when the score is below `threshold` (the gate's, else the
    model's own)."""

    name = "learned"

    def __init__(self, factory: GateFactory, artifact: str, threshold: float | None) -> None:
        self.factory = factory
        self.artifact = artifact
        self.threshold = threshold

    async def check(self, request: Mapping[str, Any], answer: TierAnswer) -> GateVerdict:
        model = await self.factory.learned_model(self.artifact)
        prompt = last_user_text(request)
        scores = await anyio.to_thread.run_sync(model.score, [prompt], [answer.text])
        score = float(np.asarray(scores, dtype=np.float64).reshape(-1)[0])
        threshold = model.threshold if self.threshold is None else self.threshold
        accept = score >= threshold
        reason = f"score {score:.2f}{'>=' if accept else '<'}{threshold:.2f}"
        return GateVerdict(accept, score, reason, self.name)


class GateFactory:
    """Builds gates for the models of `registry`. `encoder` (the router's) and
    `base_dir` (the registry file's directory) are for learned gates."""

    def __init__(
        self,
        registry: Registry,
        *,
        encoder: Encoder | None = None,
        base_dir: Path | None = None,
    ) -> None:
        self.registry = registry
        self.encoder = encoder
        self.base_dir = base_dir or Path.cwd()
        self._lock = threading.Lock()
        self._models: dict[str, ScoresAnswers | Exception] = {}

    def gates(self, specs: Sequence[Gate], call: ModelCall) -> tuple[QualityGate, ...]:
        return tuple(self.build(spec, call) for spec in specs)

    def build(self, spec: Gate, call: ModelCall) -> QualityGate:
        if spec.kind == "heuristic":
            return HeuristicGate(spec)
        if spec.kind == "self_consistency":
            # the tier's model is only known at check time: `n` is decided there
            return _Consistency(self, call, spec)
        if spec.kind == "verifier":
            assert spec.model is not None  # the registry's validation
            return VerifierGate(
                call,
                model=spec.model,
                threshold=spec.threshold,
                logprobs=self.openai_only(spec.model),
            )
        return LearnedGate(self, spec.artifact, spec.threshold)

    def openai_only(self, model: str) -> bool:
        """Whether every deployment of `model` is on an OpenAI-compatible provider (which
        take ``n`` and ``logprobs``)."""
        entry = self.registry.models.get(model)
        if entry is None:
            return False
        return all(self.registry.providers[d.provider].kind == "openai" for d in entry.targets())

    def artifacts(self) -> list[str]:
        """The learned gate artifacts the registry's cascades name."""
        return list(self._artifact_fields())

    def _artifact_fields(self) -> dict[str, str]:
        """Each learned gate artifact the cascades name, with the registry field of the
        first gate naming it (``routes[0].cascade.tiers[1].gates[0].artifact``)."""
        found: dict[str, str] = {}
        for i, route in enumerate(self.registry.routes):
            if route.cascade is None:
                continue
            for path, gate in route.cascade.written_gates():
                if gate.kind == "learned":
                    where = ("routes", i, "cascade", *path, "artifact")
                    found.setdefault(gate.artifact, format_path(where))
        return found

    def preload(self) -> None:
        """Load every learned gate model the registry names now (blocking), raising the
        first failure (`ConfigError`, its `field` the gate's, so that the registry's
        line can be named): for a registry load that should fail early."""
        for artifact, field in self._artifact_fields().items():
            model = self._load(artifact, quiet=True)  # raised: said by whoever catches it
            if isinstance(model, ConfigError):
                raise ConfigError(str(model), field=field) from model
            if isinstance(model, Exception):
                raise model

    async def learned_model(self, artifact: str) -> ScoresAnswers:
        with self._lock:
            model = self._models.get(artifact)
        if model is None:
            model = await anyio.to_thread.run_sync(self._load, artifact)
        if isinstance(model, Exception):
            raise model
        return model

    def _load(self, artifact: str, *, quiet: bool = False) -> ScoresAnswers | Exception:
        """The model for `artifact`, loaded once; a failure is kept and re-raised on every
        use (one log line, not one load attempt per request)."""
        with self._lock:
            known = self._models.get(artifact)
            if known is not None:
                return known
            model: ScoresAnswers | Exception
            try:
                model = self._load_model(artifact)
            except Exception as exc:
                if not quiet:
                    log.warning("learned gate %r could not be loaded: %s", artifact, exc)
                model = exc
            self._models[artifact] = model
            return model

    def _load_model(self, artifact: str) -> ScoresAnswers:
        if self.encoder is None:
            raise RuntimeError("a learned gate needs the router's encoder (GateFactory(encoder))")
        from llmroute.gates.learned import LearnedGateModel

        path: str | Path = artifact if artifact == "builtin" else self.base_dir / artifact
        return LearnedGateModel.load(path, self.encoder)


class _Consistency:
    """A self-consistency gate that asks with ``n`` when the tier's model takes it."""

    name = "self_consistency"

    def __init__(self, factory: GateFactory, call: ModelCall, spec: Gate) -> None:
        self.factory = factory
        self.call = call
        self.spec = spec

    async def check(self, request: Mapping[str, Any], answer: TierAnswer) -> GateVerdict:
        gate = SelfConsistencyGate(
            self.call,
            samples=self.spec.samples,
            agreement=self.spec.agreement,
            use_n=self.factory.openai_only(answer.model),
        )
        return await gate.check(request, answer)
