"""The Redis Streams job queue: keys, cache keys, records, the API side (``jobs``)
and the worker side (``delivery``). See docs/queue.md."""
