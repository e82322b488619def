"""What a budget has spent and has left, as the dashboard's Budgets panel (and
``llmroute_budget_spent_usd``) and ``GET /v1/key`` give it: every digit the dashboard's
``fmtMoney`` and `llmroute.money.usd` may write ($0.0000004 spent is not $0), float noise
dropped. Counted in this process's memory, under each test's own names."""

from __future__ import annotations

import asyncio
import uuid

from llmroute.dispatch import Dispatcher
from llmroute.dispatch.budgets import model_account
from llmroute.providers import build_providers
from llmroute.registry import parse_registry
from llmroute.registry.schema import ApiKey, Budget
from llmroute.server.auth import account_of, key_info
from llmroute.server.metrics import budget_readings
from llmroute.server.state import Gateway
from llmroute.state.limits import MemoryLimits

REGISTRY = """
encoder: builtin:static
providers:
  up: {kind: openai, base_url: "http://127.0.0.1:9/v1"}
models:
  %(name)s: {provider: up, model: x, price: {input: 0.1, output: 0.4}, budget: {usd: 5}}
routes:
  - {name: r, examples: [hello], target: %(name)s}
default: {target: %(name)s}
"""


def test_the_budget_panel_reads_a_spending_below_a_millionth() -> None:
    """Three tokens at $0.10 per million: $0.0000003 spent read as 0 (rounded to a
    millionth), so the panel showed "$0" where the report says "$0.0000003"."""
    name = f"tiny-{uuid.uuid4().hex[:8]}"
    registry = parse_registry(REGISTRY % {"name": name}).registry

    async def read() -> list[float | None]:
        dispatcher = Dispatcher(registry, build_providers(registry))
        try:
            assert dispatcher.limits is not None
            await dispatcher.limits.charge(model_account(name), "day", 3e-07)
            gateway = Gateway(None, dispatcher, 1)  # type: ignore[arg-type]  # no routing here
            return [reading.spent_usd for reading in await budget_readings(gateway)]
        finally:
            await dispatcher.aclose()

    assert asyncio.run(read()) == [3e-07]


def test_a_keys_budget_says_tiny_spending_and_what_is_left_to_the_digit() -> None:
    key = ApiKey(name="tiny", key_env="TINY_KEY", budget=Budget(usd=5, period="day"))
    limits = MemoryLimits()

    async def read() -> dict[str, object]:
        for cost in (4e-07, 0.1, 0.2):
            await limits.charge(account_of(key), "day", cost)
        info = await key_info(key, limits)
        budget = info["budget"]
        assert isinstance(budget, dict)
        return budget

    budget = asyncio.run(read())
    # 0.3000004000000000x: noise dropped, the $0.0000004 kept ("0.3" before)
    assert budget["spent_usd"] == 0.3000004
    assert budget["remaining_usd"] == 4.6999996  # "4.7" before
