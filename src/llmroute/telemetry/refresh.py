"""`llmroute refresh`: mine the decision log for traffic the registry handles badly and
propose a candidate registry.

Mined traffic: requests the registry default served (no route claimed them) and
requests routed with a margin below `max_margin` (the router barely preferred the route
over the runner-up). Their stored prompts (``telemetry.prompts: full`` or ``redacted``)
are deduplicated by hash, embedded with the registry's encoder and clustered by
average-linkage agglomerative clustering on cosine similarity, merging while the two
closest clusters' mean pairwise similarity is at least `cluster_similarity`
(deterministic: no random start, ties broken by position). Clusters smaller than
`min_cluster` are left out as noise.

Each cluster is then compared with every route's example centroid: when its members'
mean similarity to the nearest route's centroid reaches that route's own spread (the
lowest similarity any of the route's examples has to the centroid of the others, or
`route_similarity` when given), its most central prompts become new examples of that
route; otherwise it becomes a candidate route ``candidate-N`` with its most central
prompts as examples, served by the registry default's target, for a human to name.

The candidate registry is the original file loaded as data, with the additions, dumped
again (comments of the original are lost; the additions are marked with comments; its
relative paths rewritten for the candidate's folder), and validated as it will load
from there before it is written. The live registry is never touched.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import yaml

from llmroute.decide import Router
from llmroute.errors import ConfigError, LlmrouteError
from llmroute.evaluate.registry_diff import Traffic, diff_registries
from llmroute.registry import LoadedRegistry, dump_registry, parse_registry
from llmroute.registry.relocate import relocate_paths
from llmroute.telemetry.drift import is_default, routed_only
from llmroute.telemetry.record import LoggedDecision, prompt_hash

__all__ = [
    "CandidateCluster",
    "NoPrompts",
    "RefreshConfig",
    "RefreshProposal",
    "RoutingChange",
    "average_linkage",
    "candidate_yaml",
    "mine_prompts",
    "propose",
    "routing_change",
]

Matrix = npt.NDArray[np.float64]
SINGLE_EXAMPLE_BOUND = 0.5


class NoPrompts(LlmrouteError):
    """The log holds no prompt texts to mine."""


@dataclass(frozen=True, slots=True)
class RefreshConfig:
    max_margin: float = 0.1  # routed requests below this margin are mined
    min_cluster: int = 5  # smaller clusters are noise
    cluster_similarity: float = 0.5  # average-linkage stop (mean cosine similarity)
    route_similarity: float | None = None  # None: each route's own spread
    samples: int = 5  # prompts proposed per cluster
    max_prompts: int = 2000  # a seeded sample beyond this (clustering is quadratic)
    seed: int = 0


@dataclass(frozen=True, slots=True)
class MinedPrompt:
    text: str
    route: str  # the route it was sent to (``default`` when none claimed it)
    margin: float | None


@dataclass(frozen=True, slots=True)
class CandidateCluster:
    """A cluster of mined prompts and what the proposal does with it: `route` is the
    existing route it joins, or the ``candidate-N`` route it becomes (`new`)."""

    size: int
    cohesion: float  # mean similarity of the members to their centroid
    nearest_route: str | None
    similarity: float  # members' mean similarity to the nearest route's centroid
    bound: float  # the similarity needed to join that route
    route: str
    new: bool
    samples: tuple[str, ...]
    was_routed: dict[str, int] = field(default_factory=dict)  # logged route -> count

    def to_dict(self) -> dict[str, Any]:
        return {
            "size": self.size,
            "cohesion": self.cohesion,
            "nearest_route": self.nearest_route,
            "similarity": self.similarity,
            "bound": self.bound,
            "route": self.route,
            "new": self.new,
            "samples": list(self.samples),
            "was_routed": dict(self.was_routed),
        }


@dataclass(frozen=True, slots=True)
class RefreshProposal:
    n_decisions: int
    n_with_prompt: int
    n_mined: int  # unique mined prompts
    n_clustered: int  # of which in a kept cluster
    clusters: list[CandidateCluster]
    yaml_text: str
    candidate: LoadedRegistry
    mined: list[str]  # the unique mined prompts (the sample, when capped)

    @property
    def added_examples(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for c in self.clusters:
            if not c.new:
                out.setdefault(c.route, []).extend(c.samples)
        return out

    @property
    def new_routes(self) -> dict[str, list[str]]:
        return {c.route: list(c.samples) for c in self.clusters if c.new}

    def to_dict(self) -> dict[str, Any]:
        return {
            "n_decisions": self.n_decisions,
            "n_with_prompt": self.n_with_prompt,
            "n_mined": self.n_mined,
            "n_clustered": self.n_clustered,
            "clusters": [c.to_dict() for c in self.clusters],
            "added_examples": self.added_examples,
            "new_routes": self.new_routes,
        }


def mine_prompts(
    decisions: Sequence[LoggedDecision], max_margin: float
) -> tuple[list[MinedPrompt], int]:
    """The unique (by prompt hash) stored prompts of default-served and low-margin
    requests, oldest first, and how many decisions had a stored prompt at all."""
    seen: set[str] = set()
    mined: list[MinedPrompt] = []
    with_prompt = 0
    for d in decisions:
        if d.prompt is None or not d.prompt.strip():
            continue
        with_prompt += 1
        low = d.margin is not None and d.margin < max_margin
        if not (is_default(d) or low):
            continue
        key = d.prompt_hash or prompt_hash(d.prompt)
        if key in seen:
            continue
        seen.add(key)
        mined.append(MinedPrompt(d.prompt, d.route, d.margin))
    return mined, with_prompt


def average_linkage(vectors: npt.ArrayLike, threshold: float) -> list[list[int]]:
    """Average-linkage (UPGMA) clusters of unit row vectors, merging while the closest
    pair's mean cosine similarity is >= `threshold`; largest first, members in order."""
    x = np.asarray(vectors, dtype=np.float64)
    n = x.shape[0]
    if n == 0:
        return []
    sim: Matrix = x @ x.T
    np.fill_diagonal(sim, -np.inf)
    sizes = np.ones(n)
    members: list[list[int]] = [[i] for i in range(n)]
    active = np.ones(n, dtype=bool)
    for _ in range(n - 1):
        i, j = divmod(int(np.argmax(sim)), n)
        if not sim[i, j] >= threshold:
            break
        merged = (sizes[i] * sim[i] + sizes[j] * sim[j]) / (sizes[i] + sizes[j])
        sim[i, :] = merged
        sim[:, i] = merged
        sim[i, i] = -np.inf
        sim[j, :] = -np.inf
        sim[:, j] = -np.inf
        sizes[i] += sizes[j]
        members[i].extend(members[j])
        active[j] = False
    clusters = [sorted(members[i]) for i in np.flatnonzero(active)]
    clusters.sort(key=lambda c: (-len(c), c[0]))
    return clusters


def _unit(v: Matrix) -> Matrix:
    norm = float(np.linalg.norm(v))
    return v / norm if norm > 0 else v


def _route_centroids(router: Router) -> tuple[list[str], Matrix, list[float]]:
    """Each route's example centroid, and its spread: the lowest similarity one of its
    examples has to the centroid of the others (`SINGLE_EXAMPLE_BOUND` for a route with
    one example)."""
    names, centroids, spreads = [], [], []
    for route in router.loaded.registry.routes:
        vectors = np.asarray(router.encoder.encode(list(route.examples)), dtype=np.float64)
        total = vectors.sum(axis=0)
        names.append(route.name)
        centroids.append(_unit(total))
        if len(vectors) < 2:
            spreads.append(SINGLE_EXAMPLE_BOUND)
            continue
        # Leave-one-out: each example against the centroid of the others, as a mined
        # prompt (not part of the centroid) is compared with the whole centroid.
        others = np.vstack([_unit(total - v) for v in vectors])
        spreads.append(float(np.einsum("ij,ij->i", vectors, others).min()))
    return names, np.vstack(centroids), spreads


def _next_name(taken: set[str]) -> str:
    k = 1
    while f"candidate-{k}" in taken:
        k += 1
    taken.add(f"candidate-{k}")
    return f"candidate-{k}"


def _sample(mined: list[MinedPrompt], limit: int, seed: int) -> list[MinedPrompt]:
    if len(mined) <= limit:
        return mined
    keep = np.sort(np.random.default_rng(seed).choice(len(mined), limit, replace=False))
    return [mined[i] for i in keep]


def propose(
    decisions: Sequence[LoggedDecision],
    router: Router,
    config: RefreshConfig | None = None,
    *,
    original_text: str | None = None,
    out_dir: Path | None = None,
) -> RefreshProposal:
    """Mine, cluster and build the candidate registry (see the module docstring).

    `router` runs the current registry (its encoder embeds the prompts);
    `original_text` is the registry file's text (default: read from its source);
    `out_dir` the folder the candidate will be written to (its relative paths are
    rewritten to be relative to it; None: the current registry's folder).
    Raises `NoPrompts` when no decision has a stored prompt.
    """
    cfg = config if config is not None else RefreshConfig()
    decisions = routed_only(decisions)  # an embedded or reranked text is no routing prompt
    mined_all, with_prompt = mine_prompts(decisions, cfg.max_margin)
    if with_prompt == 0:
        raise NoPrompts(
            "the decision log holds no prompt texts (prompts are stored as "
            f"{_modes(decisions)}); set telemetry.prompts: full or redacted in the registry "
            "and let traffic accumulate"
        )
    existing = {t for r in router.loaded.registry.routes for t in r.examples}
    mined = _sample([m for m in mined_all if m.text not in existing], cfg.max_prompts, cfg.seed)
    vectors = (
        np.asarray(router.encoder.encode([m.text for m in mined]), dtype=np.float64)
        if mined
        else np.zeros((0, 1))
    )
    groups = [
        g for g in average_linkage(vectors, cfg.cluster_similarity) if len(g) >= cfg.min_cluster
    ]
    names, centroids, spreads = _route_centroids(router)
    taken = set(names)
    clusters: list[CandidateCluster] = []
    for group in groups:
        members = vectors[group]
        centroid = _unit(members.mean(axis=0))
        closeness = members @ centroid
        order = np.argsort(-closeness, kind="stable")[: cfg.samples]
        to_routes = (members @ centroids.T).mean(axis=0)
        best = int(np.argmax(to_routes))
        bound = cfg.route_similarity if cfg.route_similarity is not None else spreads[best]
        joins = float(to_routes[best]) >= bound
        clusters.append(
            CandidateCluster(
                size=len(group),
                cohesion=float(closeness.mean()),
                nearest_route=names[best],
                similarity=float(to_routes[best]),
                bound=float(bound),
                route=names[best] if joins else _next_name(taken),
                new=not joins,
                samples=tuple(mined[group[i]].text for i in order),
                was_routed=dict(Counter(mined[i].route for i in group).most_common()),
            )
        )
    text = original_text if original_text is not None else _registry_text(router.loaded)
    base_dir = router.loaded.base_dir
    out = base_dir if out_dir is None else out_dir
    yaml_text = candidate_yaml(
        text, clusters, router.loaded.registry.default.target, paths=(base_dir, out)
    )
    candidate = parse_registry(yaml_text, source="<candidate registry>", base_dir=out)
    return RefreshProposal(
        n_decisions=len(decisions),
        n_with_prompt=with_prompt,
        n_mined=len(mined),
        n_clustered=sum(c.size for c in clusters),
        clusters=clusters,
        yaml_text=yaml_text,
        candidate=candidate,
        mined=[m.text for m in mined],
    )


def _modes(decisions: Sequence[LoggedDecision]) -> str:
    modes = sorted({d.prompt_mode for d in decisions}) or ["nothing"]
    return "/".join(modes)


def _registry_text(loaded: LoadedRegistry) -> str:
    path = Path(loaded.source)
    if path.is_file():
        return path.read_text(encoding="utf-8")
    return dump_registry(loaded.registry)


class _Dumper(yaml.SafeDumper):
    def increase_indent(self, flow: bool = False, indentless: bool = False) -> None:
        """Indent list items under their key, as people write YAML by hand."""
        super().increase_indent(flow, False)


def _comment_before(text: str, route: str, note: str) -> str:
    """`text` with ``# note`` on its own line above the route's ``- name:`` line."""
    pattern = re.compile(rf"^([ \t]*)- name: ['\"]?{re.escape(route)}['\"]?\s*$", re.MULTILINE)
    match = pattern.search(text)
    if match is None:
        return text
    start = match.start()
    return f"{text[:start]}{match.group(1)}# {note}\n{text[start:]}"


def candidate_yaml(
    original: str,
    clusters: Sequence[CandidateCluster],
    default_target: str,
    *,
    paths: tuple[Path, Path] | None = None,
) -> str:
    """The registry text with the proposal applied, each addition marked by a comment.

    `paths` (the original's folder, the candidate's): its relative paths (a difficulty
    router, a learned gate) are rewritten for the candidate's, so that it loads there."""
    data = yaml.safe_load(original)
    if not isinstance(data, dict) or not isinstance(data.get("routes"), list):
        raise ConfigError("the registry has no routes list to add to")
    if paths is not None:
        relocate_paths(data, *paths)
    routes: list[dict[str, Any]] = data["routes"]
    by_name = {r.get("name"): r for r in routes if isinstance(r, dict)}
    added: Counter[str] = Counter()
    for c in clusters:
        if c.new:
            routes.append({"name": c.route, "target": default_target, "examples": list(c.samples)})
            continue
        entry = by_name[c.route]
        examples = list(entry.get("examples") or [])
        fresh = [s for s in c.samples if s not in examples]
        entry["examples"] = examples + fresh
        added[c.route] += len(fresh)
    text = yaml.dump(
        data,
        Dumper=_Dumper,
        sort_keys=False,
        allow_unicode=True,
        width=100,
        default_flow_style=False,
    )
    for c in clusters:
        if c.new:
            note = (
                f"candidate route mined by llmroute refresh from {c.size} prompts: "
                "name it, check its target and examples"
            )
        elif added[c.route]:
            note = f"llmroute refresh added the last {added.pop(c.route)} examples of this route"
        else:
            continue
        text = _comment_before(text, c.route, note)
    header = (
        "# Candidate registry written by `llmroute refresh`: review it, then run\n"
        "# `llmroute eval --compare` before replacing the live registry. Comments of the\n"
        "# original file are not kept.\n"
    )
    return header + text


@dataclass(frozen=True, slots=True)
class RoutingChange:
    """How routing the same prompts changes from the current to the candidate registry."""

    n: int
    changed: int
    transitions: list[tuple[str, str, int]]  # (current route, candidate route, count)

    @property
    def changed_share(self) -> float | None:
        return self.changed / self.n if self.n else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "n": self.n,
            "changed": self.changed,
            "changed_share": self.changed_share,
            "transitions": [
                {"current": a, "candidate": b, "count": k} for a, b, k in self.transitions
            ],
        }


def routing_change(current: Router, candidate: Router, texts: Sequence[str]) -> RoutingChange:
    """Route `texts` with both registries; the transitions of the changed ones, largest
    first. ``default`` stands for the registry default."""
    if not texts:
        return RoutingChange(0, 0, [])
    diff = diff_registries(current, candidate, [Traffic(t) for t in texts], examples=0)
    moves = [(m.before, m.after, m.count) for m in diff.route_moves]
    return RoutingChange(diff.n, diff.route_changed, moves)
