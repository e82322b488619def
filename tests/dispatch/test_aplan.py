"""`aplan_request`: an ordinary request is routed on the event loop, one with a long
prompt (a pasted document, which the safety layer scans in full) in a worker thread, so
the loop keeps serving other requests meanwhile; both give the decision `plan_request`
gives."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from llmroute.decide import Router
from llmroute.dispatch import aplan_request, plan_request
from llmroute.dispatch.plan import OFF_LOOP_CHARS
from llmroute.registry import parse_registry

REGISTRY = """
encoder: builtin:static
providers:
  local: {kind: openai, base_url: http://127.0.0.1:9/v1}
models:
  small: {provider: local, model: small}
  large: {provider: local, model: large}
routes:
  - {name: code, examples: [write a python function, fix this bug], target: large}
default: {target: small}
safety: {profiles: {standard: {unscanned: allow}}}
"""


class _Recording:
    """The router, noting the thread each decision ran in."""

    def __init__(self, router: Router) -> None:
        self._router = router
        self.threads: list[threading.Thread] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._router, name)

    def route(self, *args: Any, **kwargs: Any) -> Any:
        self.threads.append(threading.current_thread())
        return self._router.route(*args, **kwargs)


def test_a_long_prompt_is_routed_in_a_worker_thread() -> None:
    router = Router(parse_registry(REGISTRY))
    recording = _Recording(router)
    short = {"messages": [{"role": "user", "content": "write a python function"}]}
    document = "fix this bug in the parser, line by line. " * (OFF_LOOP_CHARS // 40 + 1)
    long = {"messages": [{"role": "user", "content": document}]}

    async def main() -> tuple[Any, Any, threading.Thread]:
        loop_thread = threading.current_thread()
        short_plan = await aplan_request(recording, short, {})  # type: ignore[arg-type]
        long_plan = await aplan_request(recording, long, {})  # type: ignore[arg-type]
        return short_plan, long_plan, loop_thread

    short_plan, long_plan, loop_thread = asyncio.run(main())
    on_loop, off_loop = recording.threads
    assert on_loop is loop_thread and off_loop is not loop_thread
    for body, plan in ((short, short_plan), (long, long_plan)):
        direct = plan_request(router, body, {})
        assert (plan.decision.route, plan.chain) == (direct.decision.route, direct.chain)
    assert long_plan.decision.safety is not None and long_plan.decision.safety.windows > 1
