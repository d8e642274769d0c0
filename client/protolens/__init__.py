"""protolens client: the Python SDK (``Client``, ``AsyncClient``) and the ``protolens`` CLI.

Needs only grpcio and protobuf; the server side (``protolens_server``) is an extra.
"""

__version__ = "0.1.0"
