"""The server secret (app/secret.py): idempotent job ids keyed by it, tokens signed with it, and
processes that agree on it again after Redis lost it."""

from __future__ import annotations

import asyncio
import hashlib
import time

import msgspec
import pytest
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError

from jobtrail.artifacts import ArtifactStore
from jobtrail.auth import Principal
from jobtrail.index import JobIndex
from jobtrail.secret import ServerSecret
from jobtrail.service import JobService
from jobtrail.tokens import TokenRejected, TokenSigner


def service(events, settings, **changes) -> JobService:
    async def enqueue(job_id: str) -> None:
        pass

    settings = msgspec.structs.replace(settings, **changes)
    index = JobIndex(events.redis, events.keys)
    return JobService(events, index, enqueue, settings, ArtifactStore(settings.artifact_dir))


async def test_an_idempotency_keys_job_id_cannot_be_derived_without_the_server_secret(events, settings, keys):
    one, other = service(events, settings), service(events, settings)  # two API processes on one Redis
    job_id = await one.job_id_for("invoice-1042", "acme")

    assert await other.job_id_for("invoice-1042", "acme") == job_id, "every process maps a key to the same job"
    assert await one.job_id_for("invoice-1042", "globex") != job_id
    assert await one.job_id_for("invoice-1043", "acme") != job_id
    guessed = hashlib.sha256(f"{keys.prefix}\0acme\0invoice-1042".encode()).hexdigest()[:32]
    assert job_id != guessed, "the old, unkeyed digest no longer names the job"
    configured = service(events, settings, token_secret="s3cret")
    assert await configured.job_id_for("invoice-1042", "acme") not in (job_id, guessed)
    assert len(job_id) == 32 and int(job_id, 16) >= 0


async def test_tokens_and_job_ids_use_different_keys_derived_from_one_secret(redis_client, keys):
    secret = ServerSecret(redis_client, keys, "")
    tokens, ids = await secret.key("tokens"), await secret.key("job-ids")
    assert tokens != ids
    assert (await redis_client.get(keys.server_secret())).encode() not in (tokens, ids)
    assert await ServerSecret(redis_client, keys, "").key("tokens") == tokens


async def test_token_signers_agree_again_without_a_restart_after_redis_lost_the_secret(redis_client, keys):
    old = TokenSigner(redis_client, keys, "")
    await old.issue(Principal(tenant="acme"), "j", 60)  # it has made and holds a secret
    await redis_client.delete(keys.server_secret())  # Redis lost its data
    new = TokenSigner(redis_client, keys, "")  # a process started afterwards makes a new secret
    fresh, _ = await new.issue(Principal(tenant="acme"), "j", 60)
    await asyncio.sleep(old.secret.retry_s)  # the old process read the secret only just now

    # The old process takes the new secret as soon as a token of it does not verify...
    assert (await old.verify(fresh)).job == "j"
    # ...and from then on signs with it, so either process accepts the other's tokens.
    again, _ = await old.issue(Principal(tenant="acme"), "j", 60)
    assert (await new.verify(again)).job == "j"
    assert (await new.verify(fresh)).job == "j"
    assert await redis_client.get(keys.server_secret()) is not None


async def test_a_process_puts_its_secret_back_when_redis_lost_it_so_its_tokens_still_verify(redis_client, keys):
    first = ServerSecret(redis_client, keys, "", refresh_s=0.2)
    key = await first.key("tokens")
    held = await redis_client.get(keys.server_secret())
    await redis_client.delete(keys.server_secret())
    await asyncio.sleep(0.3)

    assert await first.key("tokens") == key, "re-read after refresh_s: the key was gone, so ours went back"
    assert await redis_client.get(keys.server_secret()) == held
    assert await ServerSecret(redis_client, keys, "").key("tokens") == key, "a new process takes the restored secret"


async def test_a_stale_secret_is_replaced_by_the_one_redis_holds_within_the_refresh_interval(redis_client, keys):
    first = ServerSecret(redis_client, keys, "", refresh_s=0.2)
    await first.key("job-ids")
    await redis_client.set(keys.server_secret(), "another process's secret")  # it got there first
    latest = await ServerSecret(redis_client, keys, "").key("job-ids")
    await asyncio.sleep(0.3)
    assert await first.key("job-ids") == latest


async def test_a_configured_secret_never_changes_and_is_never_stored(redis_client, keys):
    configured = ServerSecret(redis_client, keys, "from-the-environment", refresh_s=0.0, retry_s=0.0)
    key = await configured.key("tokens")
    await redis_client.set(keys.server_secret(), "something else")
    assert not await configured.reread()
    assert await configured.key("tokens") == key
    assert await ServerSecret(redis_client, keys, "from-the-environment").key("tokens") == key


async def test_forged_tokens_make_a_signer_re_read_the_secret_at_most_once_per_interval(redis_client, keys):
    signer = TokenSigner(redis_client, keys, "")
    good, _ = await signer.issue(Principal(tenant="acme"), "j", 60)
    body, signature = good.split(".")
    # Well formed (tokens have one spelling) but not ours: only the first character differs.
    forged = ("B" if signature[0] == "A" else "A") + signature[1:]
    reads = 0
    read = signer.secret._read

    async def counted() -> None:
        nonlocal reads
        reads += 1
        await read()

    signer.secret._read = counted  # type: ignore[method-assign]
    await asyncio.sleep(signer.secret.retry_s)
    started = time.monotonic()
    for _ in range(50):
        with pytest.raises(TokenRejected):
            await signer.verify(f"{body}.{forged}")
    # At most one re-read per interval, however slow a busy machine makes the 50 checks.
    assert 1 <= reads <= 1 + int((time.monotonic() - started) / signer.secret.retry_s)


async def test_a_held_secret_serves_while_redis_cannot_be_reached_for_a_refresh(redis_client, keys):
    held = ServerSecret(redis_client, keys, "", refresh_s=0.0)
    key = await held.key("tokens")
    unreachable = ServerSecret(aioredis.Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.5), keys, "")
    with pytest.raises(RedisConnectionError):
        await unreachable.key("tokens")  # nothing held yet: the error is the caller's
    held.redis = unreachable.redis
    assert await held.key("tokens") == key
    await unreachable.redis.aclose()
