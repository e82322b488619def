"""A ``kind: vertex`` provider in a registry: where its base URL comes from (`project`
and `region`, Google's global host for ``global``, or a whole `base_url`), what is
refused, and that it speaks Anthropic's Messages body (`ANTHROPIC_KINDS`)."""

from __future__ import annotations

import re
from typing import Any

import pytest
from pydantic import ValidationError

from llmroute.registry.schema import ANTHROPIC_KINDS, Provider


def test_the_base_url_is_made_from_project_and_region() -> None:
    regional = Provider(kind="vertex", project="my-project", region="us-east5")
    assert regional.base_url == (
        "https://us-east5-aiplatform.googleapis.com/v1/projects/my-project/locations/us-east5"
    )
    worldwide = Provider(kind="vertex", project="my-project", region="global")
    assert worldwide.base_url == (
        "https://aiplatform.googleapis.com/v1/projects/my-project/locations/global"
    )


@pytest.mark.parametrize("region", ["us", "eu"])
def test_a_multi_region_has_its_own_host(region: str) -> None:
    """Vertex AI's US and EU multi-region endpoints are not ``{region}-aiplatform``."""
    spec = Provider(kind="vertex", project="my-project", region=region)
    assert spec.base_url == (
        f"https://aiplatform.{region}.rep.googleapis.com/v1/projects/my-project/locations/{region}"
    )


def test_a_provider_dumped_and_read_again_is_the_same() -> None:
    spec = Provider(kind="vertex", project="my-project", region="europe-west1")
    again = Provider(**spec.model_dump(exclude_defaults=True))
    assert again == spec


def test_a_whole_base_url_stands_alone() -> None:
    url = "https://psc.example.internal/v1/projects/p-123456/locations/us-east5"
    assert Provider(kind="vertex", base_url=url).base_url == url
    proxied = "https://gw.example/vertex/v1/projects/p-123456/locations/global/"
    assert Provider(kind="vertex", base_url=proxied).base_url == proxied


@pytest.mark.parametrize(
    ("fields", "said"),
    [
        ({"project": "my-project"}, "a vertex provider needs 'region' (or a base_url)"),
        ({}, "a vertex provider needs 'project' (or a base_url)"),
        (
            {"base_url": "https://x.example/v1", "region": "us-east5"},
            "'region' is part of the base_url when one is given",
        ),
        ({"project": "My_Project", "region": "us-east5"}, "not a Google Cloud project id"),
        ({"project": "my-project", "region": "us east5/x"}, "not a Vertex AI region"),
        ({"project": "my-project", "region": "us-east5", "n_ctx": 512}, "'n_ctx' is not used"),
        # a whole base_url that is not a project's location: every request a 404 from
        # Google, said as a wrong model id (AnthropicVertex's base_url is this one)
        (
            {"base_url": "https://us-east5-aiplatform.googleapis.com/v1"},
            "a vertex provider's base_url ends in /projects/PROJECT/locations/REGION",
        ),
        ({"base_url": "https://proxy.example"}, "base_url ends in /projects/PROJECT/locations"),
        (
            {"base_url": "https://x.example/v1/projects/p/locations/r/publishers/anthropic"},
            "base_url ends in /projects/PROJECT/locations/REGION",
        ),
    ],
)
def test_what_a_vertex_provider_refuses(fields: dict[str, Any], said: str) -> None:
    with pytest.raises(ValidationError, match=re.escape(said)):
        Provider(kind="vertex", **fields)


def test_project_and_region_are_for_vertex_alone() -> None:
    with pytest.raises(ValidationError, match="'project' is not used by an openai provider"):
        Provider(kind="openai", base_url="http://127.0.0.1:1/v1", project="my-project")


def test_vertex_speaks_anthropic_s_body() -> None:
    assert "vertex" in ANTHROPIC_KINDS
