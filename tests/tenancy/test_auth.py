"""Authentication over real gRPC: API keys (hashed in Redis), roles, TLS and mutual TLS."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from protolens import AsyncClient
from protolens.auth import connection
from protolens.cli import main as cli_main
from protolens.errors import UnauthenticatedError
from protolens.v1 import admin_pb2
from protolens.v1 import service_pb2 as pb
from protolens_server import metrics
from protolens_server.api.server import start_server
from protolens_server.config import Settings
from protolens_server.errors import InvalidArgument
from tenancy_certs import make_pki
from tenancy_support import Keyed, bearer

S = grpc.StatusCode


async def _code(call) -> grpc.StatusCode:
    try:
        await call
    except grpc.aio.AioRpcError as exc:
        return exc.code()
    return S.OK


async def test_calls_without_a_valid_key_are_unauthenticated(keyed: Keyed) -> None:
    jobs = keyed.jobs
    bad = [
        None,
        (("authorization", "Bearer"),),
        (("authorization", "Basic dXNlcjpwYXNz"),),
        bearer("pl_0123456789abcdef_" + "0" * 64),  # unknown id
        bearer(keyed.keys["alpha"][:-1] + ("0" if keyed.keys["alpha"][-1] != "0" else "1")),
        bearer("not-a-key"),
    ]
    for md in bad:
        assert await _code(jobs.ListJobs(pb.ListJobsRequest(), metadata=md)) == S.UNAUTHENTICATED
        assert await _code(jobs.ListModels(pb.ListModelsRequest(), metadata=md)) == (
            S.UNAUTHENTICATED
        )
        with pytest.raises(grpc.aio.AioRpcError) as info:
            async for _ in jobs.WatchJob(pb.WatchJobRequest(name="jobs/x"), metadata=md):
                pass
        assert info.value.code() == S.UNAUTHENTICATED
    ok = await jobs.ListModels(pb.ListModelsRequest(), metadata=keyed.md("alpha"))
    assert [m.name for m in ok.models] == ["models/tiny"]


async def test_health_needs_no_key_and_metrics_carry_no_tenant(keyed: Keyed) -> None:
    health = health_pb2_grpc.HealthStub(keyed.channel)
    reply = await health.Check(health_pb2.HealthCheckRequest())
    assert reply.status == health_pb2.HealthCheckResponse.SERVING
    await keyed.jobs.ListJobs(pb.ListJobsRequest(), metadata=keyed.md("alpha"))
    await keyed.jobs.ListJobs(pb.ListJobsRequest(), metadata=keyed.md("beta"))
    samples = [s for c in metrics.REGISTRY.collect() for s in c.samples]
    assert any(s.name.startswith("protolens_rpc") for s in samples)
    for sample in samples:
        assert "tenant" not in sample.labels
        assert not {"alpha", "beta", "ops"} & set(sample.labels.values())


async def test_admin_rpcs_need_the_admin_role_and_never_show_secrets(keyed: Keyed) -> None:
    admin = keyed.admin
    for tenant in ("alpha", "beta"):
        md = keyed.md(tenant)
        assert await _code(admin.ListApiKeys(admin_pb2.ListApiKeysRequest(), metadata=md)) == (
            S.PERMISSION_DENIED
        )
        create = admin.CreateApiKey(admin_pb2.CreateApiKeyRequest(tenant=tenant), metadata=md)
        assert await _code(create) == S.PERMISSION_DENIED
    assert await _code(admin.ListApiKeys(admin_pb2.ListApiKeysRequest())) == S.UNAUTHENTICATED

    listed = await admin.ListApiKeys(
        admin_pb2.ListApiKeysRequest(), metadata=bearer(keyed.admin_key)
    )
    assert sorted(k.tenant for k in listed.api_keys) == ["alpha", "beta", "ops"]
    wire = listed.SerializeToString()
    for key in (keyed.admin_key, *keyed.keys.values()):
        assert key.split("_")[2].encode() not in wire  # no secret on the wire
    stored = await keyed.api.queue.redis.keys("pltenancy:apikey:*")
    for k in stored:
        fields = await keyed.api.queue.redis.hgetall(k)
        assert not any(key.split("_")[2].encode() in v for v in fields.values()
                       for key in (keyed.admin_key, *keyed.keys.values()))  # fmt: skip

    bad = admin_pb2.CreateApiKeyRequest(tenant="Not A Tenant!")
    assert await _code(admin.CreateApiKey(bad, metadata=bearer(keyed.admin_key))) == (
        S.INVALID_ARGUMENT
    )


@pytest.mark.parametrize(
    "tenant", ["team\n", "team\r", "\nteam", "team\x00", "../team", "tеam", "a" * 64, "Team", ""]
)
async def test_a_tenant_name_with_a_trailing_newline_or_other_junk_is_refused(
    keyed: Keyed, tenant: str
) -> None:
    """``TENANT_RE`` ended in ``$``, which also matches before a final newline: an admin
    could make keys for tenant ``"team\n"`` (another tenant than ``team``, in every Redis
    key and log line). Now every such name is INVALID_ARGUMENT naming the field."""
    request = admin_pb2.CreateApiKeyRequest(tenant=tenant)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await keyed.admin.CreateApiKey(request, metadata=bearer(keyed.admin_key))
    assert info.value.code() == S.INVALID_ARGUMENT and info.value.details().startswith("tenant: ")
    listed = await keyed.admin.ListApiKeys(
        admin_pb2.ListApiKeysRequest(), metadata=bearer(keyed.admin_key)
    )
    assert sorted(k.tenant for k in listed.api_keys) == ["alpha", "beta", "ops"]


async def test_revoked_key_is_refused_at_once(keyed: Keyed) -> None:
    md_admin = bearer(keyed.admin_key)
    made = await keyed.admin.CreateApiKey(
        admin_pb2.CreateApiKeyRequest(tenant="gamma"), metadata=md_admin
    )
    md = bearer(made.secret_key)
    await keyed.jobs.ListJobs(pb.ListJobsRequest(), metadata=md)
    revoked = await keyed.admin.RevokeApiKey(
        admin_pb2.RevokeApiKeyRequest(name=made.api_key.name), metadata=md_admin
    )
    assert revoked.api_key.HasField("revoke_time")
    assert await _code(keyed.jobs.ListJobs(pb.ListJobsRequest(), metadata=md)) == (
        S.UNAUTHENTICATED
    )
    gone = admin_pb2.RevokeApiKeyRequest(name="apiKeys/ffffffffffffffff")
    assert await _code(keyed.admin.RevokeApiKey(gone, metadata=md_admin)) == S.NOT_FOUND


async def test_sdk_sends_the_key(keyed: Keyed) -> None:
    async with AsyncClient(keyed.address, **connection(api_key=keyed.keys["alpha"])) as client:
        assert len(await client.list_models()) == 1
        await client.list_jobs()
    async with AsyncClient(keyed.address, **connection(api_key="")) as client:
        with pytest.raises(UnauthenticatedError):
            await client.list_jobs()


def _cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = cli_main(argv)
    out = capsys.readouterr()
    return code, out.out, out.err


async def test_admin_cli_bootstrap_create_list_revoke(
    keyed: Keyed, keyed_settings: Settings, capsys: pytest.CaptureFixture[str], monkeypatch
) -> None:
    monkeypatch.setenv("PROTOLENS_KEY_PREFIX", keyed_settings.key_prefix)
    monkeypatch.delenv("PROTOLENS_API_KEY", raising=False)
    run = lambda argv: asyncio.to_thread(_cli, argv, capsys)  # noqa: E731 (server runs on the loop)
    code, out, _ = await run(
        ["admin", "keys", "create", "--bootstrap", "--redis-url", keyed_settings.redis_url,
         "--tenant", "ops2", "--role", "admin", "--json"]
    )  # fmt: skip
    assert code == 0
    boot = json.loads(out)
    assert boot["role"] == "admin" and boot["secret_key"].startswith("pl_")
    common = ["--address", keyed.address, "--json", "--api-key", boot["secret_key"]]
    code, out, _ = await run(["admin", "keys", "create", *common, "--tenant", "delta"])
    assert code == 0
    delta = json.loads(out)
    code, out, _ = await run(["admin", "keys", "list", *common, "--tenant", "delta"])
    assert code == 0 and [k["key_id"] for k in json.loads(out)] == [delta["key_id"]]
    assert "secret" not in out
    code, out, _ = await run(["admin", "keys", "revoke", *common, delta["key_id"]])
    assert code == 0 and json.loads(out)["revoked"]
    # a tenant key cannot run admin commands: one line, exit 1
    code, _, err = await run(
        ["admin", "keys", "list", "--address", keyed.address, "--api-key", keyed.keys["alpha"]]
    )
    assert code == 1 and "PERMISSION_DENIED" in err


async def test_insecure_mode_refuses_a_non_loopback_bind(keyed_settings: Settings) -> None:
    for host in ("0.0.0.0", "10.1.2.3", "::"):
        settings = keyed_settings.model_copy(update={"insecure": True, "grpc_host": host})
        with pytest.raises(InvalidArgument) as info:
            await start_server(settings)
        assert "insecure" in str(info.value) and "loopback" in str(info.value)


async def test_insecure_loopback_lets_anonymous_callers_in_as_default(
    keyed_settings: Settings,
) -> None:
    settings = keyed_settings.model_copy(update={"insecure": True})
    api, port = await start_server(settings, sample_interval_s=0.2)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            from protolens.v1 import service_pb2_grpc

            stub = service_pb2_grpc.ProtolensServiceStub(channel)
            await stub.ListJobs(pb.ListJobsRequest())
            # a key that is sent must still be valid
            md = bearer("pl_0123456789abcdef_" + "0" * 64)
            assert await _code(stub.ListJobs(pb.ListJobsRequest(), metadata=md)) == (
                S.UNAUTHENTICATED
            )
    finally:
        await api.stop(grace=0)


async def test_tls_and_mutual_tls(keyed_settings: Settings, tmp_path: Path) -> None:
    pki = make_pki(tmp_path / "pki")
    tls = keyed_settings.model_copy(
        update={"tls_cert_file": pki["server_cert"], "tls_key_file": pki["server_key"]}
    )
    api, port = await start_server(tls, sample_interval_s=0.2)
    try:
        from protolens_server.api.auth import ApiKeyStore

        _, key = await ApiKeyStore(api.queue.redis, api.queue.keys).create("alpha")
        address = f"127.0.0.1:{port}"
        async with AsyncClient(address, **connection(api_key=key, tls_ca=pki["ca"])) as client:
            assert await client.list_jobs() is not None
        async with grpc.aio.insecure_channel(address) as plain:  # plaintext to a TLS port
            stub = health_pb2_grpc.HealthStub(plain)
            assert await _code(stub.Check(health_pb2.HealthCheckRequest(), timeout=3)) == (
                S.UNAVAILABLE
            )
    finally:
        await api.stop(grace=0)

    mtls = tls.model_copy(update={"tls_client_ca_file": pki["ca"]})
    api, port = await start_server(mtls, sample_interval_s=0.2)
    try:
        address = f"127.0.0.1:{port}"
        with_cert = connection(
            api_key=key,
            tls_ca=pki["ca"],
            client_cert=pki["client_cert"],
            client_key=pki["client_key"],
        )
        async with AsyncClient(address, **with_cert) as client:
            await client.list_jobs()
        without = grpc.ssl_channel_credentials(root_certificates=pki["ca"].read_bytes())
        async with grpc.aio.secure_channel(address, without) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            assert await _code(stub.Check(health_pb2.HealthCheckRequest(), timeout=3)) == (
                S.UNAVAILABLE
            )
    finally:
        await api.stop(grace=0)

    half = keyed_settings.model_copy(update={"tls_cert_file": pki["server_cert"]})
    with pytest.raises(InvalidArgument, match="tls_cert_file"):
        await start_server(half)
