-- The API a request came by (chat, messages, responses, completions: the gateway's
-- endpoint, a batch line's too); NULL for the SDK's calls and /v1/route decisions.
ALTER TABLE decisions ADD COLUMN api TEXT;
