"""The message routes on the Kafka runtime: two corr_app workers share 12 partitions. Either
worker lists a topic's newest messages from every partition (a group-less read that moves no
consumer group), explains each message whichever worker holds the instances, the index entry or
the dedupe id (matched, key mismatch, dead-lettered, duplicate), lists the dead letters and
replays one; it refuses topics of other applications. The console's Messages and Dead letters
pages show the same on either worker. A message an agent has not finished is "unread" (its
group's committed offset), on either worker."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest

pytest.importorskip("aiokafka")

from .cluster import Cluster, produce, wait_until
from .test_kafka_console_api import web_url
from .test_kafka_correlation import corr_cluster, start_waiting

pytestmark = pytest.mark.timeout(240)


def find(items: list[dict[str, Any]], needle: str) -> dict[str, Any]:
    found = [m for m in items if needle in m["value"]]
    assert len(found) == 1, (needle, items)
    return found[0]


async def test_messages_explanations_and_dead_letters_on_two_workers(
    make_cluster: Callable[..., Cluster], monkeypatch: pytest.MonkeyPatch
) -> None:
    tag = uuid.uuid4().hex[:6]
    async with corr_cluster(make_cluster, monkeypatch) as (cluster, client, watcher):
        boxes, dedupe = cluster.topic("boxes"), cluster.topic("dedupe")
        await start_waiting(client, watcher, "BoxWait", {"k1": f"B1-{tag}", "k2": f"B2-{tag}"})
        await start_waiting(client, watcher, "DedupeWait", {"d1": f"D-{tag}"})
        await produce(cluster.bootstrap, boxes, [(b"a", {"box_id": f"B1-{tag}"})])
        await watcher.wait_completed(["k1"], timeout=60)
        await produce(cluster.bootstrap, boxes, [(b"b", {"box_id": f"B3-{tag}"}), (b"c", f"garbage-{tag}")])
        once = {"box_id": f"D-{tag}", "msg_id": f"m-{tag}"}
        await produce(cluster.bootstrap, dedupe, [(b"d", once)])
        await watcher.wait_for(["d1"], lambda s: bool((s.get("runtime_parameters") or {}).get("seen")), 60, "d1 got one")
        await produce(cluster.bootstrap, dedupe, [(b"d", once), (b"d", {**once, "msg_id": f"last-{tag}", "last": True})])
        await watcher.wait_completed(["d1"], timeout=60)

        urls = [await web_url(w) for w in cluster.running]
        async with httpx.AsyncClient(timeout=30) as http:
            for url in urls:
                async def get(path: str, url: str = url, **params: Any) -> Any:
                    r = await http.get(f"{url}{path}", params=params or None)
                    assert r.status_code == 200, (url, path, r.text)
                    return r.json()

                page = await get("/api/v1/messages", topic=boxes)
                assert len(page["items"]) == 3 and page["next_before"] is None, page
                assert all(m["partition"] is not None for m in page["items"])
                matched, other, garbage = (find(page["items"], v) for v in (f"B1-{tag}", f"B3-{tag}", f"garbage-{tag}"))
                one = await get("/api/v1/messages", topic=boxes, partition=matched["partition"], limit=1)
                assert len(one["items"]) == 1 and one["items"][0]["partition"] == matched["partition"]

                def at(m: dict[str, Any]) -> str:
                    return f"/api/v1/messages/{m['topic']}/{m['offset']}?partition={m['partition']}"

                e = await get(at(matched))
                assert e["verdict"] == "matched" and [d["instance"] for d in e["matched"]] == ["k1"], e
                e = await get(at(other))
                assert e["verdict"] == "key_mismatch", e
                assert [(n["instance"], n["value"]) for n in e["near"]] == [("k2", f"B2-{tag}")]
                e = await get(at(garbage))
                assert e["verdict"] == "dead_lettered" and e["dead_letter"]["source_partition"] == garbage["partition"], e

                seen = (await get("/api/v1/messages", topic=dedupe))["items"]
                first, again = sorted((m for m in seen if f"m-{tag}" in m["value"]), key=lambda m: m["timestamp"])
                assert (await get(at(first)))["verdict"] == "matched"
                e = await get(at(again))
                assert e["verdict"] == "duplicate" and e["message_id"] == f"m-{tag}", e

                letters = await get("/api/v1/dead-letters")
                assert letters["total"] is None
                assert [(x["topic"], x["source_offset"]) for x in letters["items"]] == [(boxes, garbage["offset"])]

                # A topic of another application, and an offset without its partition.
                r = await http.get(f"{url}/api/v1/messages", params={"topic": "someone-else.topic"})
                assert r.status_code == 404 and "someone-else.topic" in r.json()["error"]
                r = await http.get(f"{url}/api/v1/messages/{boxes}/{garbage['offset']}")
                assert r.status_code == 422 and "partition" in r.json()["error"]

                # The console's pages over the same reads.
                listing = await http.get(f"{url}/ui/messages", params={"topic": boxes})
                assert listing.status_code == 200 and listing.text.count("<tr data-offset=") == 3
                one_page = await http.get(f"{url}/ui/messages/{boxes}/{other['offset']}",
                                          params={"partition": other["partition"]})  # fmt: skip
                assert one_page.status_code == 200 and 'data-verdict="key_mismatch"' in one_page.text
                dead = await http.get(f"{url}/ui/dead-letters")
                assert dead.status_code == 200 and f'data-source="{boxes}:{garbage["partition"]}@' in dead.text

            letter = letters["items"][0]
            r = await http.post(f"{urls[0]}/api/v1/dead-letters/{letter['offset']}/replay",
                                params={"partition": letter["partition"], "actor": "test"})  # fmt: skip
            assert r.status_code == 202, r.text
            assert r.json()["topic"] == boxes
            # The replayed copy is read again, and dead-lettered again (it is still garbage).
            async with asyncio.timeout(60):
                while len(again_letters := (await http.get(f"{urls[1]}/api/v1/dead-letters")).json()["items"]) < 2:
                    await asyncio.sleep(0.2)
            assert again_letters[0]["source_offset"] == r.json()["offset"]


async def test_a_message_its_agent_has_not_finished_is_unread(
    make_cluster: Callable[..., Cluster], monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    """The agent "holder" of corr_app holds a message until a file exists: that message and
    the one behind it on its partition are "unread" (its group has not committed past them),
    on either worker; once released, the agent has read both."""
    release = tmp_path / "release"
    async with corr_cluster(make_cluster, monkeypatch, env={"CORR_HOLD_FILE": str(release)}) as (cluster, _c, _w):
        hold = cluster.topic("hold")
        urls = [await web_url(w) for w in cluster.running]
        async with httpx.AsyncClient(timeout=30) as http:

            listed: dict[int, dict[str, Any]] = {}  # n -> the message as last listed

            async def verdicts_are(url: str, expected: dict[int, str]) -> bool:
                """Whether ``url`` explains the messages of the topic (by their n) so."""
                r = await http.get(f"{url}/api/v1/messages", params={"topic": hold})
                assert r.status_code == 200, r.text
                found = {}
                for m in r.json()["items"]:
                    listed[json.loads(m["value"])["n"]] = m
                    e = await http.get(f"{url}/api/v1/messages/{hold}/{m['offset']}",
                                       params={"partition": m["partition"]})  # fmt: skip
                    assert e.status_code == 200, e.text
                    found[json.loads(m["value"])["n"]] = e.json()["verdict"]
                return found == expected

            await produce(cluster.bootstrap, hold, [(b"k", {"n": 1})])
            await wait_until(lambda: verdicts_are(urls[0], {1: "agent"}), 60, 0.2, "message 1 read")
            await produce(cluster.bootstrap, hold, [(b"k", {"n": 2, "hold": True}), (b"k", {"n": 3})])
            unread = {1: "agent", 2: "unread", 3: "unread"}
            for url in urls:
                await wait_until(lambda url=url: verdicts_are(url, unread), 30, 0.2, f"2 and 3 unread at {url}")
            held = listed[2]
            page = await http.get(f"{urls[1]}/ui/messages/{hold}/{held['offset']}", params={"partition": held["partition"]})
            assert page.status_code == 200 and 'data-verdict="unread"' in page.text

            # While the agent holds its partition, what arrives behind is lag on the Workers view.
            async def behind_on_hold() -> int:
                answer = (await http.get(f"{urls[0]}/api/v1/workers")).json()
                return sum(w["lag"].get(hold, 0) for w in answer["workers"])

            await produce(cluster.bootstrap, hold, [(b"k", {"n": 4})])
            assert await wait_until(behind_on_hold, 30, 0.2, "a message behind the held one as lag") >= 1
            release.touch()
            read = {1: "agent", 2: "agent", 3: "agent", 4: "agent"}
            for url in urls:
                await wait_until(lambda url=url: verdicts_are(url, read), 60, 0.2, f"2 to 4 read at {url}")

            async def caught_up() -> bool:
                return await behind_on_hold() == 0

            await wait_until(caught_up, 30, 0.2, "no lag once released")
