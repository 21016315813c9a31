"""Reads forwarded to the worker that owns the state (Kafka Streams' interactive queries).

Each worker's REST API has internal routes (``daggerflow.web.app``) that answer from its own
partitions only: ``/internal/v1/instances/{id}``, ``/internal/v1/instances`` and
``/internal/v1/count``. Instances travel as msgpack (``encode_instance``), not as the public
JSON snapshot, so the caller gets back exactly the ``Instance`` the owner holds.

A process that does not own an instance finds its owner's URL in the owners view
(``daggerflow.kafka.owners``) and calls ``Forwarder.get_instance``; listings and counts ask every
owner and merge (``list_everywhere``, ``count_everywhere``). ``RemoteReads`` is the runtime's
side: which owner to ask, asking again while a partition moves, and waiting for a state.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar
from urllib.parse import quote

import httpx
import msgspec

from ..errors import ForwardError
from ..model.bulk import BulkShare
from ..model.history import Page
from ..model.instance import Instance, decode_instance, listing_order, merge_listings
from ..model.query import InstanceQuery, listing_query, sort_key
from ..model.schedule import Schedule
from ..pipeline.partition import PartitionTask
from ..web.auth import client_ssl_context
from ..web.wire import INTERNAL_HEADER
from .owners import Owner, OwnersView

log = logging.getLogger(__name__)


_list_decoder = msgspec.msgpack.Decoder(list[Instance])
_shares_decoder = msgspec.msgpack.Decoder(list[BulkShare])
_schedules_decoder = msgspec.msgpack.Decoder(list[Schedule])
_page_decoder = msgspec.msgpack.Decoder(Page)
T = TypeVar("T")


def _count(data: bytes) -> int:
    return msgspec.json.decode(data, type=dict[str, int])["count"]


class Forwarder:
    """One pooled HTTP client for all forwarded reads of a process.

    ``token``: the API token presented to the owners (workers of one application share their
    tokens); ``cafile``: what https owners are verified with (else the system's CAs)."""

    def __init__(self, timeout: float = 5.0, *, token: str | None = None, cafile: str | None = None) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._has_token = bool(token)
        self._client = httpx.AsyncClient(
            timeout=timeout, headers=headers, verify=client_ssl_context(cafile, "web_tls_cafile")
        )

    async def get_instance(self, url: str, instance_id: str) -> Instance | None:
        """The instance as its owner at ``url`` has it committed; None if it does not exist."""
        path = f"/internal/v1/instances/{quote(instance_id, safe='')}"
        return await self._read_record(url, path, {}, decode_instance, f"instance {instance_id!r}")

    async def get_history(self, url: str, instance_id: str, *, after: int, size: int) -> Page | None:
        """A page of the history of an instance its owner at ``url`` holds; None if none."""
        path = f"/internal/v1/history/{quote(instance_id, safe='')}"
        params = {"after": str(after), "limit": str(size)}
        return await self._read_record(url, path, params, _page_decoder.decode, f"history of {instance_id!r}")

    async def list_instances(
        self,
        url: str,
        query: InstanceQuery | None = None,
        *,
        status: str | None = None,
        template: str | None = None,
        limit: int,
        offset: int = 0,
    ) -> list[Instance]:
        """The instances of ``url``'s partitions that meet the query, in its order."""
        q = listing_query(query, status=status, template=template)
        params = _filters(q) | {"limit": str(limit), "offset": str(offset)}
        return await self._read(url, "/internal/v1/instances", params, _list_decoder.decode, "instance list")

    async def list_schedules(self, url: str) -> list[Schedule]:
        """The schedules of ``url``'s partitions."""
        return await self._read(url, "/internal/v1/schedules", {}, _schedules_decoder.decode, "schedule list")

    async def count_instances(
        self,
        url: str,
        query: InstanceQuery | None = None,
        *,
        status: str | None = None,
        template: str | None = None,
    ) -> int:
        q = listing_query(query, status=status, template=template)
        return await self._read(url, "/internal/v1/count", _filters(q), _count, "count")

    async def bulk_shares(self, url: str, job: str) -> list[BulkShare]:
        """The shares of bulk job ``job`` that ``url``'s partitions hold."""
        path = f"/internal/v1/bulk/{quote(job, safe='')}"
        return await self._read(url, path, {}, _shares_decoder.decode, "bulk shares")

    async def bulk_jobs(self, url: str, *, active: bool, limit: int) -> list[BulkShare]:
        """The shares ``url``'s partitions hold of the active jobs, or of the newest ones."""
        params = {"active": "1" if active else "0", "limit": str(limit)}
        return await self._read(url, "/internal/v1/bulk", params, _shares_decoder.decode, "bulk shares")

    async def _read(self, url: str, path: str, params: dict[str, str], decode: Callable[[bytes], T], what: str) -> T:
        """GET an internal route of the worker at ``url`` and decode its answer: a refused or
        undecodable answer is a ``ForwardError`` naming ``what``."""
        return self._decoded(url, await self._get(url, path, params), decode, what)

    async def _read_record(
        self, url: str, path: str, params: dict[str, str], decode: Callable[[bytes], T], what: str
    ) -> T | None:
        """``_read`` of one record: None when the owner answers that it has none (its 404)."""
        response = await self._get(url, path, params)
        if response.status_code == 404 and response.headers.get(INTERNAL_HEADER):
            return None
        return self._decoded(url, response, decode, what)

    def _decoded(self, url: str, response: httpx.Response, decode: Callable[[bytes], T], what: str) -> T:
        self._check(url, response)
        try:
            return decode(response.content)
        except (msgspec.DecodeError, KeyError) as exc:
            raise ForwardError(url, f"undecodable {what}: {exc}", response.status_code) from exc

    async def read_internal(self, url: str, path: str, params: Mapping[str, str]) -> bytes:
        """The body of internal route ``path`` of the worker at ``url`` (the caller decodes it)."""
        response = await self._get(url, path, dict(params))
        self._check(url, response)
        return response.content

    async def versions(self, url: str) -> bytes:
        """The template versions ``url`` sees (JSON, ``model.versions.encode_versions``)."""
        response = await self._get(url, "/internal/v1/versions", {})
        self._check(url, response)
        return response.content

    async def close(self) -> None:
        await self._client.aclose()

    async def __aenter__(self) -> Forwarder:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _get(self, url: str, path: str, params: dict[str, str]) -> httpx.Response:
        try:
            return await self._client.get(url.rstrip("/") + path, params=params)
        except httpx.HTTPError as exc:
            raise ForwardError(url, f"{type(exc).__name__}: {exc}") from exc

    def _check(self, url: str, response: httpx.Response) -> None:
        challenge = response.headers.get("www-authenticate", "")
        if response.status_code in (401, 403) and challenge.lower().startswith("bearer"):
            refused = "this process's API token" if self._has_token else "a read without an API token"
            raise ForwardError(
                url,
                f"the owner refused {refused} ({response.status_code}): the workers of an application "
                "and their clients need a shared api_token (or $DAGGERFLOW_API_TOKEN)",
                response.status_code,
            )
        if response.status_code != 200:
            raise ForwardError(
                url,
                f"GET {response.request.url.path} answered {response.status_code}: {response.text[:300]}",
                response.status_code,
            )
        if not response.headers.get(INTERNAL_HEADER):
            # Something else answers at that address (a proxy, another service on a reused port).
            raise ForwardError(url, "the answer is not from a daggerflow worker", response.status_code)


def _filters(query: InstanceQuery) -> dict[str, str]:
    """A query as the internal routes read it (the public list route's names)."""
    return {name: value if isinstance(value, str) else repr(value) for name, value in query.to_filter().items()}


list_order = listing_order  # the order of every instance list (model.instance)


async def list_everywhere(
    fwd: Forwarder,
    urls: Sequence[str],
    query: InstanceQuery | None = None,
    *,
    status: str | None = None,
    template: str | None = None,
    limit: int,
    offset: int,
) -> list[Instance]:
    """One page of the instances of all ``urls``, as one store holding all of them would list it.

    Each worker is asked for its first ``offset + limit`` (a page of the merged list can come
    from any of them). A worker that fails is skipped with a warning: a listing of the workers
    that answered is more useful than none while one of them restarts.
    """
    q = listing_query(query, status=status, template=template)
    # During a rebalance two workers can briefly both answer for a partition: merge_listings
    # keeps one copy, the most advanced.
    pages = await each_answer(urls, lambda url: fwd.list_instances(url, q, limit=offset + limit))
    key, reverse = sort_key(q)
    return merge_listings(pages, offset=offset, limit=limit, key=key, reverse=reverse)


async def count_everywhere(
    fwd: Forwarder,
    urls: Sequence[str],
    query: InstanceQuery | None = None,
    *,
    status: str | None = None,
    template: str | None = None,
) -> int:
    """The number of instances on all ``urls``; workers that fail are skipped with a warning."""
    q = listing_query(query, status=status, template=template)
    return sum(await each_answer(urls, lambda url: fwd.count_instances(url, q)))


async def each_answer(urls: Sequence[str], ask: Callable[[str], Awaitable[T]]) -> list[T]:
    """``ask`` every worker of ``urls`` (each once) at the same time; the answers of those
    that answered. A worker that fails is skipped with a warning: an answer of the workers
    that answered is more useful than none while one of them restarts."""
    unique = list(dict.fromkeys(urls))
    answers = await asyncio.gather(*(ask(url) for url in unique), return_exceptions=True)
    out: list[T] = []
    for url, answer in zip(unique, answers, strict=True):
        if isinstance(answer, BaseException):
            if not isinstance(answer, ForwardError):
                raise answer  # a bug, not an unreachable worker
            log.warning("skipping %s in a listing across workers: %s", url, answer)
        else:
            out.append(answer)
    return out


@dataclass(eq=False)
class RemoteReads:
    """Reads of instances whose partition another worker owns, through the owners' REST URLs
    (``owners`` says who owns which partition; set while the runtime runs)."""

    forwarder: Forwarder
    partition_of: Callable[[str], int]
    local_task: Callable[[str], PartitionTask | None]
    worker_id: str
    owners: OwnersView | None = None
    web_url: str | None = None

    def committed(self, instance_id: str) -> Instance | None:
        task = self.local_task(instance_id)
        return None if task is None else task.processor.committed_instance(instance_id)

    async def instance(self, instance_id: str, *, timeout: float = 10.0) -> Instance | None:
        """The instance from the worker that owns its partition (its REST API)."""
        return await self._from_owner(
            instance_id,
            lambda task: task.processor.committed_instance(instance_id),
            lambda url: self.forwarder.get_instance(url, instance_id),
            timeout,
        )

    async def history(self, instance_id: str, *, after: int, size: int, timeout: float = 10.0) -> Page | None:
        """A page of the instance's history, from this worker or the one that owns it."""
        return await self._from_owner(
            instance_id,
            lambda task: task.history(instance_id, after=after, size=size),
            lambda url: self.forwarder.get_history(url, instance_id, after=after, size=size),
            timeout,
        )

    async def _from_owner(
        self,
        instance_id: str,
        local: Callable[[PartitionTask], T | None],
        remote: Callable[[str], Awaitable[T | None]],
        timeout: float,
    ) -> T | None:
        """``local`` of this worker's task for the instance, else ``remote`` of its owner's URL.

        During a rebalance the owners topic may still name this worker (its own partition is
        being re-activated) or a worker that just lost the partition (it answers 421): wait,
        within ``timeout``, for this worker's task or for a new owner, and ask again. Raises
        ``ForwardError`` when nobody answers in time: "unknown" is not "does not exist"."""
        assert self.owners is not None
        p = self.partition_of(instance_id)
        deadline = time.monotonic() + timeout
        tried: Owner | None = None
        while True:
            task = self.local_task(instance_id)
            if task is not None:
                return local(task)
            owner = self.owners.owner(p)
            left = deadline - time.monotonic()
            if owner is not None and owner.url is not None and owner.url != self.web_url and owner != tried:
                try:
                    return await remote(owner.url)
                except ForwardError as exc:
                    if exc.status not in (None, 421) or left <= 0:
                        raise
                    tried = owner
                    continue
            if owner is not None and owner.url is None and owner.worker != self.worker_id:
                return None  # its owner serves no REST API: nobody can answer
            if left <= 0:
                raise ForwardError(
                    str(owner.url if owner else None), f"no worker answers for partition {p} now"
                )
            with contextlib.suppress(TimeoutError):
                await self.owners.wait_owner(p, min(left, 0.5), other_than=owner)

    async def poll_until(
        self, instance_id: str, check: Callable[[Instance], bool], timeout: float | None
    ) -> Instance:
        """Wait for an instance another worker holds: ask its owner, backing off to 1 s."""
        deadline = None if timeout is None else time.monotonic() + timeout
        delay = 0.02
        while True:
            found = self.committed(instance_id)
            if found is None:
                with contextlib.suppress(Exception):
                    found = await self.instance(instance_id)
            if found is not None and check(found):
                return found
            if deadline is not None and time.monotonic() + delay > deadline:
                raise TimeoutError(f"instance {instance_id!r} did not reach the state in {timeout} s")
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)

    def other_urls(self) -> list[str]:
        if self.owners is None:
            return []
        return [u for u in self.owners.urls() if u != self.web_url]

    async def list_others(self, query: InstanceQuery, *, limit: int) -> list[Instance]:
        """The first ``limit`` instances of every other worker that meet ``query``, merged."""
        return await list_everywhere(self.forwarder, self.other_urls(), query, limit=limit, offset=0)

    async def schedules_of_others(self) -> list[Schedule]:
        """The schedules of every other worker (one that fails is skipped with a warning)."""
        answers = await each_answer(self.other_urls(), self.forwarder.list_schedules)
        return [s for found in answers for s in found]

    async def schedule(self, key: str, name: str, *, timeout: float = 10.0) -> Schedule | None:
        """The schedule from the worker that owns its partition (its key's), asked again while
        the partition moves; ``ForwardError`` when nobody answers in time."""
        assert self.owners is not None
        p = self.partition_of(key)
        deadline = time.monotonic() + timeout
        while True:
            task = self.local_task(key)
            if task is not None:
                return task.store.get_schedule(name)
            owner = self.owners.owner(p)
            left = deadline - time.monotonic()
            if owner is not None and owner.url is not None and owner.url != self.web_url:
                try:
                    found = await self.forwarder.list_schedules(owner.url)
                except ForwardError:
                    if left <= 0:
                        raise
                else:
                    return next((s for s in found if s.name == name), None)
            if left <= 0:
                raise ForwardError(str(owner.url if owner else None), f"no worker answers for partition {p} now")
            with contextlib.suppress(TimeoutError):
                await self.owners.wait_owner(p, min(left, 0.5), other_than=owner)

    async def versions_others(self) -> list[bytes]:
        """Every other worker's version listing; workers that fail are skipped with a warning."""
        return await each_answer(self.other_urls(), self.forwarder.versions)

    async def ask_others(self, path: str, params: Mapping[str, str]) -> list[bytes]:
        """Internal route ``path`` of every other worker; workers that fail are skipped with a
        warning (the console's listings and overview, ``console_reads``)."""
        return await each_answer(self.other_urls(), lambda url: self.forwarder.read_internal(url, path, params))

    async def count_others(self, query: InstanceQuery) -> int:
        return await count_everywhere(self.forwarder, self.other_urls(), query)



    async def bulk_jobs_others(self, *, active: bool, limit: int) -> list[BulkShare]:
        """The other workers' shares of the active jobs, or of the newest (one that fails is
        skipped)."""
        answers = await each_answer(self.other_urls(), lambda u: self.forwarder.bulk_jobs(u, active=active, limit=limit))
        return [share for found in answers for share in found]

    async def bulk_others(self, job: str) -> list[BulkShare]:
        """The shares of ``job`` the other workers hold (one that fails is skipped)."""
        answers = await each_answer(self.other_urls(), lambda u: self.forwarder.bulk_shares(u, job))
        return [share for found in answers for share in found]
