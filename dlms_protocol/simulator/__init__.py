"""Meter simulator: a meter on a pseudo-terminal that behaves like a real one (D0 and push)."""
