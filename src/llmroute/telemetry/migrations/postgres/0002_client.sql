-- Which client key of the gateway made the request (auth.keys[].name); NULL without auth.
ALTER TABLE decisions ADD COLUMN client text;
