"""Safety layer: checks that run on each request before it leaves for a provider."""
