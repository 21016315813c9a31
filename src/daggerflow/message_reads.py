"""Messages for the console and the REST API: a topic's newest messages, one message and what
became of it, the dead letters and their replay. A part of the facade (``Dagger`` inherits it).

Nothing here is on the pipeline's path: an explanation is worked out when asked, from what
the engine keeps anyway. The listener classes map the message again (their hooks are pure, as
Dagger's contract has them); the instances indexed under its correlation values are searched
for a ``deliver`` history entry naming its offset; the open listeners of the topic, the dedupe
ids and the dead-letter topic tell the rest (``model.messages.verdict``).
"""

from __future__ import annotations

import asyncio
import logging
import traceback
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import msgspec

from .errors import InvalidInput, UnknownMessage
from .model.console import ListenerItem, ListenerPart
from .model.messages import (
    CorrelationPair,
    DeadLetter,
    Delivery,
    Explanation,
    MessageItem,
    letter_of,
    message_item,
    near_values,
    parse_letter,
    replay_value,
    verdict,
)
from .model.query import InstanceQuery
from .model.records import Message
from .pipeline.ingress import ListenerMapper
from .pipeline.ports import Runtime

if TYPE_CHECKING:
    from .config import EngineConfig
    from .registry import Registry

log = logging.getLogger("daggerflow.messages")

#: The largest page of messages or dead letters.
MAX_MESSAGES = 1000
#: How many of the newest dead letters an explanation searches for its message.
LETTER_SCAN = 1000
#: How many instances indexed under one correlation value are searched for a delivery.
DELIVERY_SCAN = 50
#: How many history entries of one instance are searched for a delivery.
HISTORY_SCAN = 1000
#: How long the listener classes may take to map a message again.
MAP_TIMEOUT = 5.0
#: How many open listeners with other values an explanation shows.
NEAR = 5
#: The header a replayed message carries: where its dead letter is.
REPLAY_HEADER = "daggerflow-replay-of"


def _count(name: str, value: Any, low: int, high: int | None = None) -> int:
    if (
        isinstance(value, bool)
        or not isinstance(value, int)
        or value < low
        or (high is not None and value > high)
    ):
        bound = f"from {low} to {high}" if high is not None else f">= {low}"
        raise InvalidInput(f"{name} must be an integer {bound}, got {value!r}")
    return value


def _optional_count(name: str, value: Any) -> int | None:
    return None if value is None else _count(name, value, 0)


def _where(topic: str, partition: int | None, offset: int) -> str:
    return f"{topic}@{offset}" if partition is None else f"{topic}:{partition}@{offset}"


class MessageReads:
    config: EngineConfig
    _registry: Registry
    _runtime: Callable[[], Runtime]
    topic_names: Callable[[], list[str]]
    list_listeners: Callable[..., Any]
    append: Callable[..., Any]

    # Reading --------------------------------------------------------------------------------

    async def newest_messages(
        self, topic: str, *, limit: int = 50, partition: int | None = None, before: int | None = None
    ) -> list[MessageItem]:
        """The ``limit`` newest messages of ``topic``, newest first, each value cut to a
        preview. ``before``: only offsets below it (the next page); ``partition``: of a Kafka
        topic, only that one. Reading is not consuming. ``UnknownMessage`` for a Kafka topic the
        application neither reads nor writes."""
        self._readable(topic)
        limit = _count("limit", limit, 1, MAX_MESSAGES)
        found = await self._runtime().newest_messages(
            topic, limit=limit, partition=_optional_count("partition", partition),
            before=_optional_count("before", before),
        )  # fmt: skip
        return [message_item(m, preview=True) for m in found]

    async def message(self, topic: str, offset: int, *, partition: int | None = None) -> MessageItem:
        """One message, whole. ``UnknownMessage`` if there is none at that offset."""
        return message_item(await self._message(topic, offset, partition))

    # What became of a message ---------------------------------------------------------------

    async def explain_message(self, topic: str, offset: int, *, partition: int | None = None) -> Explanation:
        """Which instances a message reached, or why none: ``verdict`` is one of
        ``model.messages.VERDICTS``, ``summary`` says it in a sentence, and the fields hold the
        facts (its correlation pairs and id, the deliveries, the dead letter, the open
        listeners under its values or near them)."""
        msg = await self._message(topic, offset, partition)
        item = message_item(msg)
        notes: list[str] = []
        if topic == self.config.dead_letter:
            letter = parse_letter(msg)
            summary = (f"A dead letter of {_where(letter.topic, letter.source_partition, letter.source_offset)}."
                       if letter is not None else "A record of the dead-letter topic that is not a dead letter.")  # fmt: skip
            return Explanation(message=item, verdict="letter", summary=summary, dead_letter=letter)
        classes = list(self._registry.listeners.get(topic, ()))
        agents = [a.name for a in self._registry.agents if a.topic == topic]
        readers = [c.__name__ for c in classes] + [f"agent {a}" for a in agents]
        letters, scanned_all = await self._letters(LETTER_SCAN)
        letter = letter_of(letters, msg)
        if letter is None and not scanned_all:
            notes.append(f"Only the newest {LETTER_SCAN} dead letters were searched for this message.")
        pairs: list[tuple[str, str]] = []
        message_id: str | None = None
        error = tb = None
        if classes:
            try:
                pairs, found_id = await asyncio.wait_for(
                    ListenerMapper(topic, classes).mappings(msg.value), MAP_TIMEOUT
                )
                message_id = None if found_id is None else str(found_id)
            except Exception as exc:  # the user's hook: whatever it raises is the explanation
                error, tb = f"{type(exc).__name__}: {exc}", traceback.format_exc()
        matched = await self._deliveries(msg, pairs, notes)
        waiting: list[ListenerItem] = []
        near: list[ListenerItem] = []
        others = False
        if classes and not matched:
            page: ListenerPart = await self.list_listeners(topic=topic, limit=MAX_MESSAGES)
            if page.total > len(page.items):
                notes.append(
                    f"Only the {len(page.items)} oldest of {page.total} open listeners on {topic} were compared."
                )
            exact = set(pairs)
            waiting = [li for li in page.items if (li.key, li.value) in exact]
            keys = {k for k, _ in pairs} or {li.key for li in page.items}
            near = near_values(pairs[0][1] if pairs else "", page.items, keys, NEAR)
            others = bool(page.items) and not waiting
            if waiting:
                notes.append("Listeners wait under its values now: they started waiting after it was read "
                             "(unmatched_message_ttl keeps a message for listeners that come later).")  # fmt: skip
        unread = bool(classes or agents) and await self._runtime().unread(topic, msg.partition or 0, offset) is True
        duplicate = message_id is not None and not matched and await self.seen_anywhere(topic, message_id)
        found = verdict(
            listened=bool(classes), agents=agents, matched=bool(matched), dead_lettered=letter is not None,
            parse_error=error is not None, unread=unread, duplicate=duplicate, listeners_on_topic=others,
        )  # fmt: skip
        if letter is not None and error is None:
            error, tb = letter.error, letter.traceback
        return Explanation(
            message=item, verdict=found,
            summary=_summary(found, topic, pairs, message_id, matched, letter, error, agents, near),
            readers=readers, pairs=[CorrelationPair(k, v) for k, v in pairs], message_id=message_id,
            error=error, traceback=tb, dead_letter=letter, matched=matched, waiting=waiting[:NEAR],
            near=near, notes=notes,
        )  # fmt: skip

    def local_seen(self, topic: str, message_id: str) -> bool:
        """Whether a store of this process keeps ``message_id`` of ``topic`` as seen."""
        return any(store.has_seen(topic, message_id) for store in self._runtime().local_stores())

    async def seen_anywhere(self, topic: str, message_id: str) -> bool:
        """Whether any worker keeps ``message_id`` of ``topic`` as seen (a dedupe id)."""
        if self.local_seen(topic, message_id):
            return True
        answers = await self._runtime().ask_others("/internal/v1/seen", {"topic": topic, "id": message_id})
        return any(msgspec.json.decode(a).get("seen") is True for a in answers)

    # Dead letters ---------------------------------------------------------------------------

    async def dead_letters(
        self, *, limit: int = 50, partition: int | None = None, before: int | None = None
    ) -> list[DeadLetter]:
        """The newest dead letters, newest first (records of the dead-letter topic that are
        not dead letters are left out)."""
        letters, _ = await self._letters(_count("limit", limit, 1, MAX_MESSAGES),
                                         _optional_count("partition", partition), _optional_count("before", before))  # fmt: skip
        return letters

    def count_dead_letters(self) -> int | None:
        """How many records the dead-letter topic holds (None on Kafka: not cheap to know)."""
        return self._runtime().count_messages(self.config.dead_letter)

    async def replay_dead_letter(
        self, offset: int, *, partition: int | None = None, actor: str | None = None
    ) -> tuple[str, int]:
        """Append the message a dead letter holds to its topic again, as it was (key and
        value; headers are not kept in a letter), with a ``daggerflow-replay-of`` header:
        (topic, new offset). It is read like any new message, so a listener's message id
        still deduplicates it. ``UnknownMessage`` if there is no dead letter at ``offset``."""
        msg = await self._message(self.config.dead_letter, offset, partition)
        letter = parse_letter(msg)
        where = _where(msg.topic, msg.partition, offset)
        if letter is None:
            raise UnknownMessage(f"{where} is not a dead letter")
        new = await self.append(letter.topic, letter.key, replay_value(letter), {REPLAY_HEADER: where})
        log.info("dead letter %s replayed to %s@%s by %s", where, letter.topic, new, actor or "(no actor)",
                 extra={"event": "dead_letter_replayed", "topic": letter.topic, "offset": new,
                        "dead_letter": where, "actor": actor})  # fmt: skip
        return letter.topic, int(new)

    # Inside ---------------------------------------------------------------------------------

    def _readable(self, topic: Any) -> None:
        if not isinstance(topic, str) or not topic:
            raise InvalidInput(f"topic must be a non-empty string, got {topic!r}")
        if (
            self.config.broker is not None
            and topic != self.config.dead_letter
            and topic not in self.topic_names()
        ):
            # A worker reads only its application's topics: a read token is no key to the cluster.
            raise UnknownMessage(f"topic {topic!r} is not one this application reads or writes")

    async def _message(self, topic: str, offset: int, partition: int | None) -> Message:
        self._readable(topic)
        offset = _count("offset", offset, 0)
        partition = _optional_count("partition", partition)
        found = await self._runtime().message_at(topic, partition, offset)
        if found is None:
            raise UnknownMessage(f"no message at {_where(topic, partition, offset)}")
        return found

    async def _letters(
        self, most: int, partition: int | None = None, before: int | None = None
    ) -> tuple[list[DeadLetter], bool]:
        """The newest ``most`` dead letters (records that are not dead letters left out), and
        whether that is all of them."""
        found = await self._runtime().newest_messages(
            self.config.dead_letter, limit=most, partition=partition, before=before
        )
        return [letter for letter in map(parse_letter, found) if letter is not None], len(found) < most

    async def _deliveries(
        self, msg: Message, pairs: list[tuple[str, str]], notes: list[str]
    ) -> list[Delivery]:
        """The nodes ``msg`` was delivered to: the ``deliver`` entries naming its offset in the
        histories of the instances whose parameters hold one of its correlation values."""
        runtime = self._runtime()
        out: list[Delivery] = []
        searched: set[str] = set()
        for key, value in pairs:
            query = InstanceQuery(params=((key, value),), sort="-created")
            candidates = await runtime.list_all(query, limit=DELIVERY_SCAN + 1, offset=0)
            if len(candidates) > DELIVERY_SCAN:
                notes.append(f"Only the newest {DELIVERY_SCAN} instances with {key}={value} were searched.")
            for inst in candidates[:DELIVERY_SCAN]:
                if inst.id in searched:
                    continue
                searched.add(inst.id)
                after, read = -1, 0
                while read < HISTORY_SCAN:
                    page = await runtime.history(inst.id, after=after, size=200)
                    if page is None:
                        break
                    for entry in page.items:
                        if (entry.event == "deliver" and entry.topic == msg.topic and entry.offset == msg.offset
                                and entry.partition == msg.partition):  # fmt: skip
                            out.append(Delivery(instance=inst.id, template_name=inst.template_name,
                                                status=inst.status, node=entry.node or "", time=entry.time))  # fmt: skip
                    read += len(page.items)
                    if page.next is None:
                        break
                    after = page.next
        return out


def _pairs_text(pairs: list[tuple[str, str]]) -> str:
    return ", ".join(f"{k}={v}" for k, v in pairs) or "no correlation value"


def _summary(
    found: str,
    topic: str,
    pairs: list[tuple[str, str]],
    message_id: str | None,
    matched: list[Delivery],
    letter: DeadLetter | None,
    error: str | None,
    agents: list[str],
    near: list[ListenerItem],
) -> str:
    if found == "matched":
        n = len({d.instance for d in matched})
        return f"Delivered to {n} instance{'s' if n != 1 else ''} under {_pairs_text(pairs)}."
    if found == "dead_lettered" and letter is not None:
        return f"Dead-lettered by {letter.consumer or 'its reader'}: {letter.error}"
    if found == "parse_error":
        return f"The listener classes of {topic} cannot map it to a correlation value: {error}"
    if found == "unread":
        return f"Not read yet: the readers of {topic} have not reached it, or not finished it."
    if found == "duplicate":
        return (f"Ignored as a duplicate: its message id {message_id!r} was seen before (a message with this id "
                "was delivered or kept, perhaps to an instance that no longer exists).")  # fmt: skip
    if found == "key_mismatch":
        shown = ", ".join(f"{li.key}={li.value}" for li in near[:3])
        return (
            f"No listener waits under {_pairs_text(pairs)}; listeners on {topic} wait under other values"
            + (f" ({shown}, ...)." if shown else ".")
        )
    if found == "no_waiter":
        return f"No listener took it, and none waits on {topic} under {_pairs_text(pairs)} now."
    if found == "agent":
        return f"Read by agent {', '.join(agents)}, which did not dead-letter it."
    return f"Nothing in this application reads {topic}."
