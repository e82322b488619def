-- The decision log: one row per request, feedback on decisions, shadowed requests.
-- Times are Unix seconds (double precision), as the Store API takes them.
CREATE TABLE decisions (
    id text PRIMARY KEY,
    ts double precision NOT NULL,
    registry_version text NOT NULL,
    route text NOT NULL,
    model text NOT NULL,
    served_model text,
    deployment text,
    layer text NOT NULL,
    confidence double precision NOT NULL,
    margin double precision,
    signals jsonb NOT NULL,
    status integer NOT NULL,
    error text,
    latency_ms double precision NOT NULL,
    ttft_ms double precision,
    tokens_in integer,
    tokens_out integer,
    cost_usd double precision,
    usage_estimated boolean NOT NULL,
    attempts jsonb NOT NULL,
    cache_hit boolean NOT NULL,
    stream boolean NOT NULL,
    shadow boolean NOT NULL,
    prompt_mode text NOT NULL,
    prompt_hash text,
    prompt text
);
CREATE INDEX decisions_ts ON decisions (ts);
CREATE INDEX decisions_route_ts ON decisions (route, ts);

CREATE TABLE feedback (
    id bigserial PRIMARY KEY,
    decision_id text NOT NULL REFERENCES decisions (id) ON DELETE CASCADE,
    ts double precision NOT NULL,
    score double precision,
    thumbs text,
    comment text
);
CREATE INDEX feedback_ts ON feedback (ts);
CREATE INDEX feedback_decision ON feedback (decision_id);

-- No foreign key: a shadow pair may be judged before the batching writer has flushed
-- its decision.
CREATE TABLE shadow (
    id bigserial PRIMARY KEY,
    decision_id text NOT NULL,
    ts double precision NOT NULL,
    route text NOT NULL,
    routed_model text NOT NULL,
    reference_model text NOT NULL,
    routed_answer text,
    reference_answer text,
    judge text,
    routed_ok boolean,
    judge_score double precision,
    judge_error text,
    reference_latency_ms double precision,
    reference_cost_usd double precision,
    extra jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX shadow_ts ON shadow (ts);
CREATE INDEX shadow_decision ON shadow (decision_id);
