"""Doors: thin adapters from a wire protocol into the one pipeline."""
