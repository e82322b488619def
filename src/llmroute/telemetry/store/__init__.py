"""Decision-log backends."""
