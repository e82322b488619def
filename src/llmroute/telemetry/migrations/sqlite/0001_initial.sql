-- The decision log: one row per request, feedback on decisions, shadowed requests.
CREATE TABLE decisions (
    id TEXT PRIMARY KEY,
    ts REAL NOT NULL,
    registry_version TEXT NOT NULL,
    route TEXT NOT NULL,
    model TEXT NOT NULL,
    served_model TEXT,
    deployment TEXT,
    layer TEXT NOT NULL,
    confidence REAL NOT NULL,
    margin REAL,
    signals TEXT NOT NULL,
    status INTEGER NOT NULL,
    error TEXT,
    latency_ms REAL NOT NULL,
    ttft_ms REAL,
    tokens_in INTEGER,
    tokens_out INTEGER,
    cost_usd REAL,
    usage_estimated INTEGER NOT NULL,
    attempts TEXT NOT NULL,
    cache_hit INTEGER NOT NULL,
    stream INTEGER NOT NULL,
    shadow INTEGER NOT NULL,
    prompt_mode TEXT NOT NULL,
    prompt_hash TEXT,
    prompt TEXT
);
CREATE INDEX decisions_ts ON decisions (ts);
CREATE INDEX decisions_route_ts ON decisions (route, ts);

CREATE TABLE feedback (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    decision_id TEXT NOT NULL REFERENCES decisions (id) ON DELETE CASCADE,
    ts REAL NOT NULL,
    score REAL,
    thumbs TEXT,
    comment TEXT
);
CREATE INDEX feedback_ts ON feedback (ts);
CREATE INDEX feedback_decision ON feedback (decision_id);

-- No foreign key: a shadow pair may be judged before the batching writer has flushed
-- its decision.
CREATE TABLE shadow (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    decision_id TEXT NOT NULL,
    ts REAL NOT NULL,
    route TEXT NOT NULL,
    routed_model TEXT NOT NULL,
    reference_model TEXT NOT NULL,
    routed_answer TEXT,
    reference_answer TEXT,
    judge TEXT,
    routed_ok INTEGER,
    judge_score REAL,
    judge_error TEXT,
    reference_latency_ms REAL,
    reference_cost_usd REAL,
    extra TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX shadow_ts ON shadow (ts);
CREATE INDEX shadow_decision ON shadow (decision_id);
