"""The gRPC API: thin servicers over the job queue and the model catalog.

- ``server``: ``start_server(settings)`` / ``serve(settings)`` (health, reflection, metrics);
- ``servicer``: each RPC is proto -> queue/catalog call -> proto;
- ``validation``: a create request checked and turned into a ``JobSpec``;
- ``errors``: the one table from domain errors to gRPC status codes;
- ``interceptors``: applies that table, binds the caller's tenant, records RPC metrics;
- ``stack``: the embedded one-machine stack (Redis, API server, workers) for ``protolens up``.
"""
