"""PERSON and LOCATION through Microsoft Presidio over a spaCy model the user installed.

Names and addresses need a statistical NER model; regexes cannot find them. We never fetch
one: Presidio's own loader downloads a missing spaCy model from the network, so we load the
model with ``spacy.load`` ourselves (a package name or a model directory) and hand it over.
Both imports are lazy, so llmroute imports and runs without the ``pii`` extra.
"""

from __future__ import annotations

from importlib import import_module
from types import ModuleType
from typing import Any

from llmroute.errors import ConfigError
from llmroute.safety._pii_span import PiiSpan

NER_TYPES = ("PERSON", "LOCATION")
_INSTALL = "pip install 'llmroute[pii]'"


def _require(module: str, what: str) -> ModuleType:
    try:
        return import_module(module)
    except ImportError as exc:
        raise ConfigError(
            f"PERSON/LOCATION detection needs {what}, which is not installed; run {_INSTALL}",
            field="safety.pii.ner_model",
        ) from exc


class NerFinder:
    """Presidio's spaCy recognizer restricted to the NER types asked for."""

    def __init__(self, model: str, entities: tuple[str, ...]) -> None:
        spacy = _require("spacy", "spaCy")
        analyzer_mod = _require("presidio_analyzer", "presidio-analyzer")
        engines = _require("presidio_analyzer.nlp_engine", "presidio-analyzer")
        recognizers = _require("presidio_analyzer.predefined_recognizers", "presidio-analyzer")
        try:
            nlp = spacy.load(model)
        except (OSError, ImportError, ValueError) as exc:
            raise ConfigError(
                f"spaCy model {model!r} cannot be loaded ({exc}). Install a spaCy model "
                "yourself from its official release (for example the en_core_web_sm wheel "
                "from github.com/explosion/spacy-models) and pass its package name or its "
                "directory; llmroute never downloads one",
                field="safety.pii.ner_model",
            ) from exc
        engine = engines.SpacyNlpEngine(models=[{"lang_code": "en", "model_name": model}])
        engine.nlp = {"en": nlp}  # loaded: Presidio will not try to download it
        recognizer = recognizers.SpacyRecognizer(supported_entities=list(NER_TYPES))
        registry = analyzer_mod.RecognizerRegistry(
            recognizers=[recognizer], supported_languages=["en"]
        )
        self._analyzer: Any = analyzer_mod.AnalyzerEngine(
            registry=registry, nlp_engine=engine, supported_languages=["en"]
        )
        self._entities = list(entities)

    def find(self, text: str) -> list[PiiSpan]:
        results = self._analyzer.analyze(text=text, entities=self._entities, language="en")
        return [
            PiiSpan(str(r.entity_type), int(r.start), int(r.end), float(r.score))
            for r in results
            if r.entity_type in self._entities
        ]
