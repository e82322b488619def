"""Cascade quality gates: decide whether a cheap model's answer is good enough."""
