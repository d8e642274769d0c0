"""Operator commands: ``protolens admin keys create | list | revoke``.

They call the SDK's admin methods (the AdminService) with an admin API key
(``--api-key`` or ``$PROTOLENS_API_KEY``). The first admin key cannot come from the
service, so ``protolens admin keys create --bootstrap`` hands over to the server side
(the ``bootstrap-api-key`` hook, ``_cli.entry_points``), which writes it straight into
the service's store (``--redis-url``/``$PROTOLENS_REDIS_URL``; needs
``protolens[server]``); run it once where the service's Redis is reachable.
"""

from __future__ import annotations

import argparse
import json
from datetime import datetime
from typing import TYPE_CHECKING, Any

from protolens._cli import entry_points
from protolens._cli.jobs import client_of, service_args

if TYPE_CHECKING:
    from protolens.types import ApiKey

_ROLES = ("tenant", "admin")
BOOTSTRAP_HOOK = "bootstrap-api-key"
"""``protolens.hooks`` entry point: ``(tenant, *, role, display_name, redis_url) -> ApiKey``
(with its ``secret_key``), run where the service's Redis is reachable."""


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
    service_args(p)
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
    service_args(p)
    p.add_argument("--tenant", default="", help="only this tenant's keys")
    p.set_defaults(func=cmd_list)

    p = keys_sub.add_parser(
        "revoke",
        help="revoke a key by id",
        description="Revoke an API key: the next call made with it is UNAUTHENTICATED.",
    )
    service_args(p)
    p.add_argument("key_id", help="key id (the middle of pl_<id>_<secret>) or apiKeys/<id>")
    p.set_defaults(func=cmd_revoke)


def _time(when: datetime | None) -> str:
    return when.isoformat().replace("+00:00", "Z") if when else ""


def _key_dict(key: ApiKey) -> dict[str, Any]:
    return {
        "key_id": key.key_id,
        "tenant": key.tenant,
        "role": key.role,
        "name": key.display_name,
        "created": _time(key.create_time),
        "revoked": _time(key.revoke_time),
    }


def _print_key(d: dict[str, Any]) -> None:
    state = f"revoked {d['revoked']}" if d["revoked"] else "active"
    print(f"{d['key_id']}  tenant={d['tenant']}  role={d['role']}  {state}  {d['name']}")


def cmd_create(args: argparse.Namespace) -> int:
    if args.bootstrap:
        bootstrap = entry_points.hook(BOOTSTRAP_HOOK)
        key = bootstrap(
            args.tenant, role=args.role, display_name=args.name, redis_url=args.redis_url
        )
    else:
        with client_of(args) as client:
            key = client.create_api_key(args.tenant, role=args.role, display_name=args.name)
    d = _key_dict(key)
    if args.json:
        print(json.dumps({**d, "secret_key": key.secret_key}))
    else:
        _print_key(d)
        print(key.secret_key)
        print("(the key is shown only now: store it safely)")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    with client_of(args) as client:
        keys = [_key_dict(k) for k in client.list_api_keys(tenant=args.tenant)]
    if args.json:
        print(json.dumps(keys))
    else:
        for d in keys:
            _print_key(d)
    return 0


def cmd_revoke(args: argparse.Namespace) -> int:
    with client_of(args) as client:
        d = _key_dict(client.revoke_api_key(args.key_id))
    print(json.dumps(d) if args.json else f"revoked {d['key_id']} (tenant {d['tenant']})")
    return 0
