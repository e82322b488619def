"""Providers of kind ``bedrock`` in a registry: the region that names their endpoint,
and each mistake named by file, line and field as the loader names others."""

from __future__ import annotations

import pytest
from registry_helpers import VALID, assert_points_at, one_error, replace_line

from llmroute.registry import parse_registry
from llmroute.registry.schema import ANTHROPIC_KINDS

# line 4 of VALID is the `local` provider
BEDROCK = "local: {kind: bedrock, region: eu-central-1}"


def test_a_region_is_the_bedrock_runtime_endpoint_of_that_region() -> None:
    registry = parse_registry(replace_line(VALID, 4, BEDROCK)).registry
    spec = registry.providers["local"]
    assert spec.kind == "bedrock" and spec.region == "eu-central-1"
    assert spec.base_url == "https://bedrock-runtime.eu-central-1.amazonaws.com"
    assert "bedrock" in ANTHROPIC_KINDS  # Anthropic's parameters (thinking, max_tokens)


def test_a_base_url_stands_for_a_vpc_endpoint_or_a_proxy() -> None:
    url = "https://vpce-0a1b2c3d.bedrock-runtime.us-east-1.vpce.amazonaws.com"
    text = replace_line(VALID, 4, f'local: {{kind: bedrock, base_url: "{url}"}}')
    assert parse_registry(text).registry.providers["local"].base_url == url


def test_without_a_region_or_a_base_url() -> None:
    error = one_error(replace_line(VALID, 4, "local: {kind: bedrock}"))
    assert_points_at(error, 4, "providers.local.region", "needs a region (or a base_url)")


@pytest.mark.parametrize("region", ["US-EAST-1", "us-east", "eu central 1", "bedrock"])
def test_a_region_that_is_not_an_aws_one(region: str) -> None:
    error = one_error(replace_line(VALID, 4, f"local: {{kind: bedrock, region: '{region}'}}"))
    assert_points_at(error, 4, "providers.local.region", "is not an AWS region")


def test_a_region_on_another_kind_is_refused() -> None:
    line = 'local: {kind: openai, base_url: "http://127.0.0.1:8001/v1", region: us-east-1}'
    error = one_error(replace_line(VALID, 4, line))
    assert_points_at(error, 4, "providers.local.region", "not used by an openai provider")


def test_in_process_fields_are_refused_on_bedrock() -> None:
    error = one_error(
        replace_line(VALID, 4, "local: {kind: bedrock, region: us-west-2, n_ctx: 4096}")
    )
    assert_points_at(error, 4, "providers.local.n_ctx", "not used by a bedrock provider")
