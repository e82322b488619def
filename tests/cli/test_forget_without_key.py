"""`responses forget --client ''` and `batches forget --client ''` erase what was kept for
requests made without a key (the owner ``''`` the gateway gives them) in a registry
with an `auth` section as well as in one without: kept in Redis, such records outlive
the gateway that made them before it had keys (for `ttl_s`). Both were refused ("no
client key ''") while `db forget --client ''` erased that gateway's rows. Real Redis."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from redis_service import REDIS_URL

from llmroute.cli._app import run
from llmroute.registry import load_registry
from llmroute.state.batches import BatchStore
from llmroute.state.stored_responses import ResponseStore, StoredResponse

REGISTRY = """\
encoder: builtin:static
providers:
  echo: {{kind: echo}}
models:
  small: {{provider: echo, model: echo-small}}
routes:
  - {{name: chat, target: small, examples: [hello there]}}
default: {{target: small}}
stored_responses: {{url: "{url}", namespace: {namespace}}}
batches: {{url: "{url}", namespace: {namespace}}}
"""
AUTH = "auth:\n  keys:\n    - {name: team, key_env: H1_FORGET_TEAM_KEY}\n"


async def _keep(registry: Path, owner: str) -> None:
    """A response and a file kept for `owner`, as the gateway keeps them."""
    loaded = load_registry(registry).registry
    responses, batches = ResponseStore.open(loaded), BatchStore.open(loaded)
    assert responses is not None and batches is not None
    try:
        response = {"id": f"resp_{owner or 'none'}", "object": "response", "output": []}
        assert await responses.put(owner, StoredResponse(response, [], []), wait=True)
        file = {"id": f"file-{owner or 'none'}", "object": "file", "bytes": 2}
        await batches.put_file(owner, file, content=b"{}")
    finally:
        await responses.aclose()
        await batches.aclose()


@pytest.mark.parametrize("command", ["responses", "batches"])
def test_the_records_made_without_a_key_are_erased_once_the_registry_has_keys(
    command: str,
    tmp_path: Path,
    redis_namespace: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.setenv("H1_FORGET_TEAM_KEY", "sk-team-0123456789")
    registry = tmp_path / "registry.yaml"
    registry.write_text(REGISTRY.format(url=REDIS_URL, namespace=redis_namespace))
    asyncio.run(_keep(registry, ""))  # kept before the registry had keys
    registry.write_text(registry.read_text() + AUTH)
    asyncio.run(_keep(registry, "team"))
    code = run([command, "forget", "-r", str(registry), "--client", ""])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert " of client '' erased from redis://" in out, out
    assert not out.startswith("0 "), out
    # the key's own records are left; forgetting them again finds the key's alone
    assert run([command, "forget", "-r", str(registry), "--client", ""]) == 0
    assert capsys.readouterr().out.startswith("0 ")
    assert run([command, "forget", "-r", str(registry), "--client", "team"]) == 0
    assert not capsys.readouterr().out.startswith("0 ")


def test_an_unknown_key_is_still_refused_with_the_names_it_knows(
    tmp_path: Path, redis_namespace: str, capsys: pytest.CaptureFixture[str]
) -> None:
    registry = tmp_path / "registry.yaml"
    registry.write_text(REGISTRY.format(url=REDIS_URL, namespace=redis_namespace) + AUTH)
    assert run(["responses", "forget", "-r", str(registry), "--client", "teem"]) == 2
    said = capsys.readouterr().err
    assert f"no client key 'teem' in {registry} (known: team, or '' for" in said, said
