"""Operator commands: ``protolens admin keys create | list | revoke``.

They call the AdminService with an admin API key (``--api-key`` or
``$PROTOLENS_API_KEY``). The first admin key cannot come from the service, so
``protolens admin keys create --bootstrap`` writes it straight into Redis
(``--redis-url``/``$PROTOLENS_REDIS_URL``, server side: needs
``protolens[server]``); run it once where the service's Redis is reachable.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from protolens._cli.jobs import _address_default, connection_args, connection_kwargs

_ROLES = ("tenant", "admin")


def register(sub: argparse._SubParsersAction) -> None:
    admin = sub.add_parser(
        "admin",
        help="operator commands (API keys)",
        description="Operator commands: create, list and revoke API keys (docs/tenancy.md).",
    )
    admin_sub = admin.add_subparsers(dest="admin_command", metavar="ADMIN_COMMAND")
    keys = admin_sub.add_parser(
        "keys",
        help="create, list and revoke API keys",
        description="API keys: each belongs to a tenant and reaches only that tenant's jobs "
        "and checks; an admin key also reaches these commands (docs/tenancy.md).",
    )
    keys_sub = keys.add_subparsers(dest="keys_command", metavar="KEYS_COMMAND")

    p = keys_sub.add_parser(
        "create",
        help="create a key; prints it once",
        description="Create an API key for a tenant and print it, once (only its hash is "
        "stored). The first admin key has no key to call the API with: --bootstrap writes "
        "it straight into the service's Redis.",
    )
    _common(p)
    p.add_argument("--tenant", required=True, help="tenant the key belongs to")
    p.add_argument("--role", choices=_ROLES, default="tenant", help="what the key may do")
    p.add_argument("--name", default="", help="label: who or what uses the key")
    p.add_argument(
        "--bootstrap",
        action="store_true",
        help="write the key straight into Redis (server side, no API key needed)",
    )
    p.add_argument("--redis-url", default=None, help="with --bootstrap ($PROTOLENS_REDIS_URL)")
    p.set_defaults(func=cmd_create)

    p = keys_sub.add_parser(
        "list",
        help="list keys (never their secrets)",
        description="List API keys (never their secrets), optionally of one tenant.",
    )
    _common(p)
    p.add_argument("--tenant", default="", help="only this tenant's keys")
    p.set_defaults(func=cmd_list)

    p = keys_sub.add_parser(
        "revoke",
        help="revoke a key by id",
        description="Revoke an API key: the next call made with it is UNAUTHENTICATED.",
    )
    _common(p)
    p.add_argument("key_id", help="key id (the middle of pl_<id>_<secret>) or apiKeys/<id>")
    p.set_defaults(func=cmd_revoke)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--address",
        default=_address_default(),
        metavar="HOST[:PORT]",
        help="the protolens API ($PROTOLENS_ADDRESS; a host without a port means port 50051)",
    )
    p.add_argument("--json", action="store_true", help="print machine-readable JSON")
    p.add_argument(
        "--timeout", type=float, default=30.0, metavar="SECONDS", help="seconds per call"
    )
    connection_args(p)


def _stub(args: argparse.Namespace) -> tuple[Any, Any, Any]:
    import grpc

    from protolens.client import service_target
    from protolens.v1 import admin_pb2_grpc

    kw = connection_kwargs(args)
    creds = kw.get("credentials")
    target = service_target(args.address)
    channel = grpc.secure_channel(target, creds) if creds else grpc.insecure_channel(target)
    return channel, admin_pb2_grpc.AdminServiceStub(channel), kw["metadata"] or None


def _call(args: argparse.Namespace, method: str, request: Any) -> Any:
    from protolens.errors import translate_errors

    channel, stub, metadata = _stub(args)
    try:
        with translate_errors():
            return getattr(stub, method)(request, metadata=metadata, timeout=args.timeout)
    finally:
        channel.close()


def _key_dict(key: Any) -> dict[str, Any]:
    from protolens.v1 import admin_pb2 as pb

    return {
        "key_id": key.key_id,
        "tenant": key.tenant,
        "role": pb.ApiKeyRole.Name(key.role).removeprefix("API_KEY_ROLE_").lower(),
        "name": key.display_name,
        "created": key.create_time.ToJsonString(),
        "revoked": key.revoke_time.ToJsonString() if key.HasField("revoke_time") else "",
    }


def _print_key(d: dict[str, Any]) -> None:
    state = f"revoked {d['revoked']}" if d["revoked"] else "active"
    print(f"{d['key_id']}  tenant={d['tenant']}  role={d['role']}  {state}  {d['name']}")


def cmd_create(args: argparse.Namespace) -> int:
    if args.bootstrap:
        d, secret = _bootstrap(args)
    else:
        from protolens.v1 import admin_pb2 as pb

        role = pb.API_KEY_ROLE_ADMIN if args.role == "admin" else pb.API_KEY_ROLE_TENANT
        resp = _call(
            args,
            "CreateApiKey",
            pb.CreateApiKeyRequest(tenant=args.tenant, role=role, display_name=args.name),
        )
        d, secret = _key_dict(resp.api_key), resp.secret_key
    if args.json:
        print(json.dumps({**d, "secret_key": secret}))
    else:
        _print_key(d)
        print(secret)
        print("(the key is shown only now: store it safely)")
    return 0


def _bootstrap(args: argparse.Namespace) -> tuple[dict[str, Any], str]:
    import asyncio

    from protolens_server.api.auth import ApiKeyStore
    from protolens_server.config import load_settings
    from protolens_server.errors import InvalidArgument
    from protolens_server.queue.connection import redis_from_url
    from protolens_server.queue.keys import Keys

    settings = load_settings(redis_url=args.redis_url)
    if not settings.redis_url:
        raise InvalidArgument("redis_url", "--bootstrap needs --redis-url or $PROTOLENS_REDIS_URL")

    async def create() -> tuple[Any, str]:
        client = redis_from_url(settings.redis_url)  # also sentinel and cluster URLs
        try:
            store = ApiKeyStore(client, Keys(settings.key_prefix))
            return await store.create(args.tenant, args.role, args.name)
        finally:
            await client.aclose()

    info, secret = asyncio.run(create())
    d = {
        "key_id": info.key_id,
        "tenant": info.tenant,
        "role": info.role,
        "name": info.name,
        "created": info.created_at,
        "revoked": "",
    }
    return d, secret


def cmd_list(args: argparse.Namespace) -> int:
    from protolens.v1 import admin_pb2 as pb

    resp = _call(args, "ListApiKeys", pb.ListApiKeysRequest(tenant=args.tenant))
    keys = [_key_dict(k) for k in resp.api_keys]
    if args.json:
        print(json.dumps(keys))
    else:
        for d in keys:
            _print_key(d)
    return 0


def cmd_revoke(args: argparse.Namespace) -> int:
    from protolens.v1 import admin_pb2 as pb

    name = args.key_id if args.key_id.startswith("apiKeys/") else f"apiKeys/{args.key_id}"
    resp = _call(args, "RevokeApiKey", pb.RevokeApiKeyRequest(name=name))
    d = _key_dict(resp.api_key)
    print(json.dumps(d) if args.json else f"revoked {d['key_id']} (tenant {d['tenant']})")
    return 0
