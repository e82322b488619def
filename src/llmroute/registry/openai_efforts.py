"""The lowest ``reasoning_effort`` an OpenAI reasoning model takes, for thinking turned
off (docs/reasoning.md, "Provider parameters").

OpenAI's models differ in the lowest value they accept, and refuse one they do not know
with a 400: o1, o3, o4-mini (and o3-mini, o3-pro) take ``low`` to ``high``; the gpt-5
family (``gpt-5``, ``gpt-5-mini``, ``gpt-5-nano``) added ``minimal``; gpt-5.1, gpt-5.2
and the later gpt-5 versions take ``none`` (no reasoning at all: their default) and
dropped ``minimal``. Their
variants keep their own lists: the codex models take ``low`` and up; the pro models
(``gpt-5-pro`` takes only ``high``, ``gpt-5.2-pro`` ``medium`` and up) refuse ``low``, so
they get no ``reasoning_effort`` at all (None: their default, the least they do), behind
a router's path too (``openai/gpt-5-pro``). Only
the ids read here get another value than ``low``, which every other model that takes
``reasoning_effort`` (an o-series model, gpt-oss, a compatible server, an id that
cannot be read: an Azure deployment's own name) accepts. A dated id
(``gpt-5-mini-2025-08-07``, ``gpt-5.1-2025-11-13``) is its model's.
"""

from __future__ import annotations

import re

__all__ = ["OFF_EFFORT", "off_effort", "refuses_none"]

OFF_EFFORT = "low"
"""The lowest effort every OpenAI reasoning model accepts."""

_DATED = r"(?:-\d{4}-\d{2}-\d{2})?"
# gpt-5, gpt-5-mini, gpt-5-nano: minimal (gpt-5-codex, gpt-5-pro and gpt-5-chat do not)
_MINIMAL = re.compile(rf"gpt-5(?:-mini|-nano)?{_DATED}")
# gpt-5.1, gpt-5.2 ..., not their codex, pro or chat variants: none (a later major
# version is not known to: it gets the value every model takes)
_NONE = re.compile(rf"gpt-5\.[1-9]\d*{_DATED}")
# gpt-5-pro, gpt-5.2-pro: only their higher efforts (a lower one is a 400)
_PRO = re.compile(rf"gpt-5(?:\.[1-9]\d*)?-pro{_DATED}")
# o1, o3, o4-mini, o3-mini, o3-pro ...: low to high only
_O_SERIES = re.compile(rf"o[1-9](?:-mini|-pro)?{_DATED}")


def off_effort(model_id: str) -> str | None:
    """The ``reasoning_effort`` that turns thinking off (or lowest) on the OpenAI model
    `model_id` names: ``none``, ``minimal`` or `OFF_EFFORT`; None for a model whose
    lowest is its default (send none)."""
    text = model_id.strip().lower()
    # a pro model behind a router's path (``openai/gpt-5-pro``) refuses low all the
    # same, and nothing sent is safe on any server: read through the path for it alone
    if _PRO.fullmatch(text.rpartition("/")[2]):
        return None
    if _NONE.fullmatch(text):
        return "none"
    if _MINIMAL.fullmatch(text):
        return "minimal"
    return OFF_EFFORT


def refuses_none(model_id: str) -> bool:
    """Whether the OpenAI model `model_id` names is known to refuse ``reasoning_effort:
    none`` with a 400 (an o-series model, gpt-5 and its mini and nano, a pro model):
    a client's thinking off said for gpt-5.1 and later, sent where the router put it.
    False for a model that takes it and for an id that cannot be read (an Azure
    deployment's name: its client may know what it serves)."""
    text = model_id.strip().lower()
    return bool(
        _PRO.fullmatch(text.rpartition("/")[2])
        or _MINIMAL.fullmatch(text)
        or _O_SERIES.fullmatch(text)
    )
