-- Who and what a request's cost is attributed to: the end user it named (OpenAI's
-- safety_identifier or user, Anthropic's metadata.user_id) and its x-llmroute-tags
-- header (a JSON list of strings; NULL without one).
ALTER TABLE decisions ADD COLUMN end_user text;
ALTER TABLE decisions ADD COLUMN tags jsonb;
