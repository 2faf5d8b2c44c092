"""Actors: each owns its state alone and changes it one message at a time, so no locks."""
