"""protolens server side: engine, model sources, queue, workers and the gRPC API."""

ENGINE_VERSION = "0.2.1"
"""Bumped whenever the engine's output for the same inputs may change; part of every cache key."""
