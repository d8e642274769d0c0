"""Generated protobuf and gRPC stubs for ``protolens.v1`` (``scripts/gen_proto``; do not edit)."""
