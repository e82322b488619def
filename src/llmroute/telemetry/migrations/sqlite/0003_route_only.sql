-- Decisions asked for through /v1/route: nothing was dispatched, so they carry no served
-- model, tokens or cost, and their latency is the decision's alone.
ALTER TABLE decisions ADD COLUMN route_only INTEGER NOT NULL DEFAULT 0;
