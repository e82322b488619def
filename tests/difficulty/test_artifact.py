from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from llmroute.difficulty.artifact import load_router, read_meta, save_router
from llmroute.difficulty.train import Rows, fit_router
from llmroute.errors import ConfigError


@pytest.mark.parametrize("kind", ["linear", "knn", "mlp", "mf", "random"])
def test_save_load_gives_identical_scores(
    tmp_path: Path, kind: str, train_rows: Rows, val_rows: Rows
) -> None:
    router, metrics = fit_router(kind, train_rows, val_rows, seed=0)
    save_router(
        router,
        tmp_path / kind,
        encoder_identity="fake:32",
        trained_on={"rows": 300},
        metrics=metrics,
    )
    loaded = load_router(tmp_path / kind, encoder_identity="fake:32")
    expected = router.score(val_rows.embeddings, val_rows.texts)
    assert np.array_equal(loaded.score(val_rows.embeddings, val_rows.texts), expected)
    meta = read_meta(tmp_path / kind)
    assert meta["kind"] == kind and meta["encoder"] == "fake:32"
    assert meta["trained_on"] == {"rows": 300} and "llmroute_version" in meta
    assert meta["metrics"]["apgr"] == pytest.approx(metrics["apgr"])


def test_wrong_encoder_is_refused_naming_both(
    tmp_path: Path, train_rows: Rows, val_rows: Rows
) -> None:
    router, _ = fit_router("linear", train_rows, val_rows)
    save_router(router, tmp_path, encoder_identity="builtin:static@abc", trained_on={})
    with pytest.raises(ConfigError, match=r"builtin:static@abc.*builtin:minilm@def"):
        load_router(tmp_path, encoder_identity="builtin:minilm@def")
    # how much of a long text is read (max_tokens, truncate) does not change the vectors'
    # meaning: a router trained with the defaults serves a registry that reads less
    trained = "builtin:static@abc;max_tokens=256;truncate=head"
    save_router(router, tmp_path / "t", encoder_identity=trained, trained_on={})
    load_router(tmp_path / "t", encoder_identity="builtin:static@abc;max_tokens=128;truncate=tail")


def test_missing_or_corrupt_artifact_names_the_path(
    tmp_path: Path, train_rows: Rows, val_rows: Rows
) -> None:
    # a path that is not there is said as such, not as a folder lacking router.json
    with pytest.raises(ConfigError, match="no such router artifact") as missing:
        load_router(tmp_path / "nothing")
    assert "router.json" not in str(missing.value) and "nothing" in str(missing.value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match=r"router\.json is missing"):
        load_router(tmp_path / "empty")
    router, _ = fit_router("linear", train_rows, val_rows)
    save_router(router, tmp_path / "a", encoder_identity="e", trained_on={})
    (tmp_path / "a" / "arrays.npz").write_bytes(b"garbage")
    with pytest.raises(ConfigError, match=r"arrays\.npz"):
        load_router(tmp_path / "a")
    (tmp_path / "a" / "router.json").write_text("{oops", encoding="utf-8")
    with pytest.raises(ConfigError, match="corrupt router artifact"):
        load_router(tmp_path / "a")


@pytest.mark.parametrize("key", ["state", "trained_on"])
def test_a_router_json_whose_sections_are_not_objects_is_refused(
    tmp_path: Path, train_rows: Rows, val_rows: Rows, key: str
) -> None:
    """An edited router.json with `"state": []` (or `trained_on`) was an AttributeError
    traceback from `registry check`, `calibrate` and `bench`."""
    router, _ = fit_router("linear", train_rows, val_rows)
    save_router(router, tmp_path, encoder_identity="e", trained_on={})
    meta_path = tmp_path / "router.json"
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    meta[key] = []
    meta_path.write_text(json.dumps(meta), encoding="utf-8")
    with pytest.raises(ConfigError, match=f"'{key}' must be an object") as caught:
        load_router(tmp_path)
    assert "router.json" in str(caught.value)
    with pytest.raises(ConfigError, match=f"'{key}' must be an object"):
        read_meta(tmp_path)


@pytest.mark.parametrize("kind", ["linear", "mlp"])
def test_features_null_beside_stored_feature_statistics_is_an_inconsistent_artifact(
    tmp_path: Path, kind: str
) -> None:
    """`state.features: null` with the features' arrays stored loaded as a router of 8
    more embedding columns: "w1: the router expects 264-dimensional embeddings, the
    encoder gives 256", which blamed the encoder for the artifact's fault."""
    from llmroute.difficulty.features import FEATURE_NAMES, FeatureScaler
    from llmroute.difficulty.routers import LinearRouter, MlpRouter

    n = len(FEATURE_NAMES)
    scaler = FeatureScaler(np.zeros(n), np.ones(n))
    width = 32 + n
    router: LinearRouter | MlpRouter
    if kind == "linear":
        router = LinearRouter(np.ones(width, np.float32), 0.0, scaler, 1.0)
    else:
        f32 = np.float32
        layers = (np.ones((width, 4), f32), np.zeros(4, f32), np.ones(4, f32), np.zeros(1, f32))
        router = MlpRouter(layers, scaler)
    save_router(router, tmp_path, encoder_identity="e", trained_on={})
    expects = load_router(tmp_path).expects()
    assert expects is not None and expects[1] == 32  # as saved: 32 columns + the features
    meta_path = tmp_path / "router.json"
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    meta["state"]["features"] = None
    meta_path.write_text(json.dumps(meta), encoding="utf-8")
    with pytest.raises(ConfigError, match="features: is null, yet the text features'") as caught:
        load_router(tmp_path)
    assert "inconsistent" in str(caught.value) and "arrays.npz" in str(caught.value)


@pytest.mark.parametrize(
    ("kind", "edit", "said"),
    [
        ("knn", {"k": "x"}, "state.k: must be a number, got 'x'"),
        ("knn", {"temperature": None}, "state.temperature: must be a number"),
        ("knn", {"temperature": ...}, "state.temperature: is missing"),  # not "got None"
        ("knn", {"k": ...}, "state.k: is missing"),
        ("linear", {"lambda": ...}, "state.lambda: is missing"),
        ("mf", {"weak": "gpt-9"}, "state.weak: 'gpt-9' is not one of models"),
        ("random", {"seed": None}, "state: int() argument"),
        ("random", {"seed": float("inf")}, "state: cannot convert float infinity"),
    ],
)
def test_a_bad_state_in_router_json_is_blamed_on_router_json_not_the_arrays(
    tmp_path: Path, train_rows: Rows, val_rows: Rows, kind: str, edit: dict[str, object], said: str
) -> None:
    """An edited router.json state (a `k` that is not a number, a missing `lambda`) was
    reported as `arrays.npz: corrupt router artifact: k: ...`: the operator looked at the
    wrong file. A broken array is still blamed on arrays.npz."""
    router, _ = fit_router(kind, train_rows, val_rows, seed=0)
    save_router(router, tmp_path, encoder_identity="fake:32", trained_on={})
    meta_path = tmp_path / "router.json"
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    for key, value in edit.items():
        if value is ...:
            del meta["state"][key]
        else:
            meta["state"][key] = value
    meta_path.write_text(json.dumps(meta), encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_router(tmp_path)
    assert str(caught.value).startswith(f"{meta_path}: corrupt router artifact: {said}")


def test_a_missing_array_is_still_blamed_on_arrays_npz(
    tmp_path: Path, train_rows: Rows, val_rows: Rows
) -> None:
    router, _ = fit_router("linear", train_rows, val_rows, seed=0)
    save_router(router, tmp_path, encoder_identity="fake:32", trained_on={})
    with np.load(tmp_path / "arrays.npz") as stored:
        kept = {name: stored[name] for name in stored.files if name != "bias"}
    np.savez(tmp_path / "arrays.npz", **kept)
    with pytest.raises(ConfigError) as caught:
        load_router(tmp_path)
    npz = tmp_path / "arrays.npz"
    assert str(caught.value) == f"{npz}: corrupt router artifact: bias: the array is missing"


def test_an_encoder_urls_password_is_left_out_of_identities(
    tmp_path: Path, train_rows: Rows, val_rows: Rows
) -> None:
    """A remote encoder's identity held its base_url's ``user:password@``: written into
    every artifact trained with it (and the embedding cache's identity.txt) and named in
    load errors. Artifacts written so before still load with the encoder as it is now,
    and their password is not named when they are refused."""
    from llmroute.encoders.remote import RemoteEncoder

    encoder = RemoteEncoder("http://svc:pw-s3cret-77@127.0.0.1:9/v1", "m")
    encoder.close()
    assert encoder.identity == "openai:http://127.0.0.1:9/v1#m"
    router, _ = fit_router("linear", train_rows, val_rows)
    old = "openai:http://svc:pw-s3cret-77@127.0.0.1:9/v1#m"
    save_router(router, tmp_path / "old", encoder_identity=old, trained_on={})
    load_router(tmp_path / "old", encoder_identity=encoder.identity)
    with pytest.raises(ConfigError, match=r"openai:http://127\.0\.0\.1:9/v1#m") as refused:
        load_router(tmp_path / "old", encoder_identity="builtin:static@abc")
    assert "s3cret" not in str(refused.value)
