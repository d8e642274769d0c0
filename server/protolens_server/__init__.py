"""protolens server side: engine, model sources, queue, workers and the gRPC API."""

ENGINE_VERSION = "0.2.3"
"""Bumped whenever the engine's output for the same inputs may change; part of every cache key.

0.2.2: scores version 2 (significance, intervals, median summary, scored on the stored PNG).
"""
