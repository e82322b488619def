-- The answer's text, when telemetry.responses asks for it (redacted or in full, cut at
-- telemetry.max_response_chars); NULL otherwise.
ALTER TABLE decisions ADD COLUMN response TEXT;
