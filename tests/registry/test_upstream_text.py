"""What the registry sends upstream as written (header names and values, model ids) is
refused at load when HTTP cannot carry it: a header value holding a line break or
another control character loaded, and aiohttp refused it on every request ("Forbidden
control character detected in headers"); a header name with a space or a ':' loaded,
and every request was the upstream's 400 (or, with ':', went as another header). A
header's value is never repeated in the error: it may be a secret."""

from __future__ import annotations

from pathlib import Path

import pytest
from registry_helpers import VALID, assert_points_at, one_error, replace_line

from llmroute.cli._app import run
from llmroute.registry import parse_registry

SECRET = "s3cr3t-proxy-token"
# YAML escapes, written in double quotes: the file holds the backslash
CONTROLS = [r"\r\nX-Injected: 1", r"\n", r"\0", r"\x01", r"\x7f", r"\x85", r"\u2028"]


def _provider(headers: str) -> str:
    return replace_line(VALID, 5, f"openai: {{kind: openai, base_url: https://x.ex/v1, {headers}}}")


def _encoder(fields: str) -> str:
    return replace_line(
        VALID, 2, f"encoder: {{kind: openai, base_url: 'http://e/v1', model: m, {fields}}}"
    )


@pytest.mark.parametrize("control", CONTROLS, ids=range(len(CONTROLS)))
def test_a_control_character_in_a_header_value_is_refused_without_the_value(
    control: str,
) -> None:
    text = _provider(f'headers: {{X-Proxy-Tag: "{SECRET}{control}"}}')
    error = one_error(text)
    assert_points_at(error, 5, "providers.openai.headers.X-Proxy-Tag", "control character")
    assert SECRET not in str(error)
    encoder = _encoder(f'headers: {{X-Proxy-Tag: "{SECRET}{control}"}}')
    error = one_error(encoder)
    assert_points_at(error, 2, "encoder.headers.X-Proxy-Tag", "control character")
    assert SECRET not in str(error)


def test_a_tab_between_words_and_a_non_ascii_value_load_for_a_provider() -> None:
    """RFC 9110 allows a tab inside a value, and aiohttp sends UTF-8 as it is."""
    parse_registry(_provider(r'headers: {X-Title: "my\tapp", X-App: "Café"}'))


def test_a_non_ascii_header_value_is_refused_for_the_encoder() -> None:
    """The embeddings client (httpx) encodes header values as ASCII: `serve` stopped on
    a UnicodeEncodeError's traceback."""
    error = one_error(_encoder(f'headers: {{X-App: "{SECRET}é"}}'))
    assert_points_at(error, 2, "encoder.headers.X-App", "ASCII")
    assert SECRET not in str(error)


@pytest.mark.parametrize("name", ["X Title", "X:Title", "X-Titlé", "X(Title)"])
@pytest.mark.parametrize("field", ["headers", "headers_env"])
def test_a_header_name_http_cannot_carry_is_refused(name: str, field: str) -> None:
    """Named as the field (a name that is no identifier is written in brackets)."""
    value = "app" if field == "headers" else "PROXY_TAG"
    error = one_error(_provider(f"{field}: {{'{name}': {value}}}"))
    assert_points_at(error, 5, f"providers.openai.{field}[{name!r}]", "not an HTTP header name")
    error = one_error(_encoder(f"{field}: {{'{name}': {value}}}"))
    assert_points_at(error, 2, f"encoder.{field}[{name!r}]", "not an HTTP header name")


@pytest.mark.parametrize("control", [r"\n", r"\t", r"\0", r"\u2028"], ids=range(4))
def test_a_control_character_in_an_upstream_model_id_is_refused(control: str) -> None:
    """The id goes in the body (or, for bedrock and vertex, the URL's path) and in log
    lines: it loaded, and every request was the upstream's 404."""
    line = f'small: {{provider: local, model: "qwen2.5{control}-7b"}}'
    error = one_error(replace_line(VALID, 7, line))
    assert_points_at(error, 7, "models.small.model", "control character")
    deployed = replace_line(
        VALID, 7, f'small: {{deployments: [{{provider: local, model: "q{control}"}}], model: q}}'
    )
    assert_points_at(
        one_error(deployed), 7, "models.small.deployments[0].model", "control character"
    )
    encoder = replace_line(
        VALID, 2, f'encoder: {{kind: openai, base_url: "http://e/v1", model: "m{control}"}}'
    )
    assert_points_at(one_error(encoder), 2, "encoder.model", "control character")


def test_registry_check_names_the_header_and_not_its_value(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("COLUMNS", "400")
    path = tmp_path / "reg.yaml"
    path.write_text(_provider(f'headers: {{X-Proxy-Tag: "{SECRET}\\r\\n"}}'), encoding="utf-8")
    assert run(["registry", "check", str(path)]) == 2
    out, err = capsys.readouterr()
    assert f"{path}:5: providers.openai.headers.X-Proxy-Tag: " in err
    assert SECRET not in out + err


ENV_REGISTRY = """\
encoder: builtin:static
providers:
  local:
    kind: openai
    base_url: http://127.0.0.1:19899/v1
    api_key_env: H18_KEY
    headers_env: {X-Proxy-Key: H18_PROXY}
models:
  small: {provider: local, model: m}
routes:
  - {name: r, examples: [hi], target: small}
default: {target: small}
"""


@pytest.mark.parametrize(
    ("variable", "field"),
    [("H18_KEY", "api_key_env"), ("H18_PROXY", "headers_env.X-Proxy-Key")],
)
def test_a_credential_variable_holding_a_line_break_stops_the_build_at_its_line(
    variable: str, field: str
) -> None:
    """A key read from a file with its last line break (a Kubernetes secret made
    `--from-file`) loaded, and every request raised aiohttp's ValueError ("Forbidden
    control character detected in headers"): `serve` now stops at the field's line,
    naming the variable and never its value."""
    from llmroute.errors import ConfigError
    from llmroute.providers.build import build_http

    loaded = parse_registry(ENV_REGISTRY, source="reg.yaml")
    environ = {"H18_KEY": "sk-fine", "H18_PROXY": "proxy-fine", variable: f"{SECRET}\n"}
    with pytest.raises(ConfigError) as caught:
        build_http("local", loaded.registry.providers["local"], environ)
    error = loaded.at(caught.value)
    line = 6 if variable == "H18_KEY" else 7
    assert str(error).startswith(f"reg.yaml:{line}: providers.local.{field}: "), error
    assert f"environment variable {variable}" in error.message
    assert "control character" in error.message
    assert SECRET not in str(error)
    clean = {"H18_KEY": "sk-fine", "H18_PROXY": "proxy\tfine"}  # a tab between words is fine
    build_http("local", loaded.registry.providers["local"], clean)


def test_an_encoder_credential_holding_a_line_break_is_named_not_shown(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """httpx's refusal of such a header quoted it ("Illegal header value b'Bearer
    ...'"): the key went into the error. `registry check` warns at the field's line (as
    of an unset one), and `route` stops there."""
    monkeypatch.setenv("COLUMNS", "400")
    monkeypatch.setenv("H18_EMBED_KEY", f"{SECRET}\r\n")
    path = tmp_path / "reg.yaml"
    text = ENV_REGISTRY.replace(
        "encoder: builtin:static",
        "encoder: {kind: openai, base_url: 'http://127.0.0.1:19899/v1', model: e, "
        "api_key_env: H18_EMBED_KEY}",
    )
    path.write_text(text, encoding="utf-8")
    assert run(["registry", "check", str(path)]) == 0
    out, err = capsys.readouterr()
    assert f"warning: {path}:1: encoder.api_key_env: environment variable H18_EMBED_KEY " in err
    assert "control character" in err
    assert run(["route", "--registry", str(path), "hello"]) == 2
    out2, err2 = capsys.readouterr()
    assert f"{path}:1: encoder.api_key_env: environment variable H18_EMBED_KEY" in err2
    assert SECRET not in out + err + out2 + err2


BEDROCK_REGISTRY = """\
encoder: builtin:static
providers:
  aws: {kind: bedrock, region: us-east-1, base_url: "http://127.0.0.1:18099"}
models:
  small: {provider: aws, model: m}
routes:
  - {name: r, examples: [hi], target: small}
default: {target: small}
"""


@pytest.mark.parametrize(
    ("environ", "variable"),
    [
        ({"AWS_BEARER_TOKEN_BEDROCK": f"{SECRET}\n"}, "AWS_BEARER_TOKEN_BEDROCK"),
        (
            {"AWS_ACCESS_KEY_ID": f"{SECRET}\n", "AWS_SECRET_ACCESS_KEY": "s"},
            "AWS_ACCESS_KEY_ID",
        ),
        (
            {"AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s", "AWS_SESSION_TOKEN": "t\n"},
            "AWS_SESSION_TOKEN",
        ),
    ],
)
def test_a_bedrock_credential_the_registry_does_not_name_is_checked_too(
    environ: dict[str, str], variable: str
) -> None:
    """A bedrock provider without `api_key_env` sends AWS_BEARER_TOKEN_BEDROCK as its
    Authorization, or signs with AWS_ACCESS_KEY_ID (in the Authorization) and
    AWS_SESSION_TOKEN (a header of its own): one read from a file with its line break
    loaded, and every request failed as it was sent. It stops the build at the
    provider's line, named, never shown; a variable the provider does not use (the key
    pair beside a bearer token) is left alone."""
    from llmroute.errors import ConfigError
    from llmroute.providers.build import build_http

    loaded = parse_registry(BEDROCK_REGISTRY, source="reg.yaml")
    spec = loaded.registry.providers["aws"]
    with pytest.raises(ConfigError) as caught:
        build_http("aws", spec, environ)
    error = loaded.at(caught.value)
    assert str(error).startswith("reg.yaml:3: providers.aws"), error
    assert f"environment variable {variable} holds a control character" in error.message
    assert SECRET not in str(error)
    unused = {"AWS_BEARER_TOKEN_BEDROCK": "fine", "AWS_ACCESS_KEY_ID": "k\n"}
    build_http("aws", spec, unused)


def test_an_encoder_credential_past_ascii_is_named_not_a_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The embeddings client (httpx) sends header values in ASCII alone, as the file's
    `headers` are checked: a key past it raised UnicodeEncodeError out of the encoder's
    build, a traceback from `route`. It stops at the field's line, named, never shown."""
    monkeypatch.setenv("COLUMNS", "400")
    monkeypatch.setenv("H18_EMBED_KEY", f"{SECRET}é")
    path = tmp_path / "reg.yaml"
    text = ENV_REGISTRY.replace(
        "encoder: builtin:static",
        "encoder: {kind: openai, base_url: 'http://127.0.0.1:19899/v1', model: e, "
        "api_key_env: H18_EMBED_KEY}",
    )
    path.write_text(text, encoding="utf-8")
    assert run(["route", "--registry", str(path), "hello"]) == 2
    out, err = capsys.readouterr()
    assert f"{path}:1: encoder.api_key_env: environment variable H18_EMBED_KEY" in err
    assert "past ASCII" in err
    assert SECRET not in out + err
