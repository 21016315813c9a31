"""Experiment 3: consumer-group rebalances with aiokafka (classic protocol) on a 4-partition topic.

    .venv/bin/python bench/kafka_spike/rebalance.py [--bootstrap 127.0.0.1:9092]
        [--sessions 6000,10000] [--skip-static]

Members are subprocesses (``member`` mode) that subscribe with a ``ConsumerRebalanceListener``
and print every revoke/assign with a wall-clock timestamp; they keep calling getmany().
Heartbeat interval = session timeout / 3 (aiokafka's default ratio: 3000 for 10000) unless
``--heartbeat-ms`` is given.

Scenarios:

  invalid-session  session_timeout_ms below the broker's group.min.session.timeout.ms: what
                   does the client raise?
  kill             A and B own 2+2 partitions; SIGKILL B; time until A owns all 4
                   (per --sessions value).
  leave            the same with a clean shutdown of B (consumer.stop() sends LeaveGroup).
  join             A owns 4; C joins; time until both own 2, and A's revoke->assign gap.
  static           group_instance_id set on both: SIGKILL B (A takes over after the session
                   timeout); then SIGKILL B and restart it at once (does A see a rebalance?).
  copartition      RangePartitionAssignor / RoundRobin / Sticky with two topics of 4 partitions:
                   does a member own the same partition numbers of both topics?
  slow-assign      on_partitions_assigned takes 0.5x and 1.5x the session timeout (a restore
                   inside the callback): is the member evicted? (aiokafka sends no heartbeats
                   until the callback returns.)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from common import base_parser, create_topics, suffix

HERE = Path(__file__).resolve().parent


# --------------------------------------------------------------------------------------------
# member
# --------------------------------------------------------------------------------------------


class Printer(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, name: str, assign_delay: float = 0.0) -> None:
        self.name = name
        self.assign_delay = assign_delay

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        print(
            f"EVENT {time.time():.3f} {self.name} revoked {sorted(tp.partition for tp in revoked)}",
            flush=True,
        )

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        print(
            f"EVENT {time.time():.3f} {self.name} assigned {sorted(tp.partition for tp in assigned)}",
            flush=True,
        )
        if self.assign_delay:
            await asyncio.sleep(self.assign_delay)  # e.g. a long state restore inside the callback
            print(f"EVENT {time.time():.3f} {self.name} callback-done []", flush=True)


async def member(args: argparse.Namespace) -> None:
    c = AIOKafkaConsumer(
        bootstrap_servers=args.bootstrap,
        group_id=args.group,
        group_instance_id=args.instance_id or None,
        enable_auto_commit=False,
        session_timeout_ms=args.session_timeout_ms,
        heartbeat_interval_ms=args.heartbeat_ms or max(100, args.session_timeout_ms // 3),
    )
    await c.start()
    c.subscribe([args.topic], listener=Printer(args.name, args.assign_delay))
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    try:
        while not stop.is_set():
            await c.getmany(timeout_ms=200)
    finally:
        t0 = time.time()
        await c.stop()  # LeaveGroup (not sent for static members)
        print(f"STOPPED {time.time():.3f} {args.name} stop() took {time.time() - t0:.3f}s", flush=True)


# --------------------------------------------------------------------------------------------
# orchestrator
# --------------------------------------------------------------------------------------------


class Member:
    """A member subprocess; its EVENT lines go to a shared queue as (name, time, kind, partitions)."""

    events: queue.Queue[tuple[str, float, str, list[int]]] = queue.Queue()

    def __init__(self, args: argparse.Namespace, name: str, group: str, topic: str, session_ms: int,
                 instance_id: str | None = None, assign_delay: float = 0.0) -> None:  # fmt: skip
        cmd = [
            sys.executable, str(HERE / "rebalance.py"), "member", "--bootstrap", args.bootstrap,
            "--name", name, "--group", group, "--topic", topic, "--session-timeout-ms", str(session_ms),
            *(["--instance-id", instance_id] if instance_id else []),
            *(["--heartbeat-ms", str(args.heartbeat_ms)] if args.heartbeat_ms else []),
            *(["--assign-delay", str(assign_delay)] if assign_delay else []),
        ]  # fmt: skip
        self.name = name
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, bufsize=1)
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            parts = line.split()
            if parts and parts[0] == "EVENT":
                parts_list = json.loads(" ".join(parts[4:]))  # "[0, 1]"
                Member.events.put((parts[2], float(parts[1]), parts[3], parts_list))
            elif parts and parts[0] == "STOPPED":
                print("   ", line.rstrip(), flush=True)

    def kill(self) -> float:
        t = time.time()
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        return t

    def term(self) -> float:
        t = time.time()
        os.kill(self.proc.pid, signal.SIGTERM)
        return t


def wait_for(owned: dict[str, list[int]], want: dict[str, int], timeout: float = 90) -> float:
    """Consume events until each named member owns the wanted number of partitions; return the time."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if all(len(owned.get(n, [])) == k for n, k in want.items()):
            return time.time()
        try:
            name, t, kind, parts = Member.events.get(timeout=0.5)
        except queue.Empty:
            continue
        print(
            f"    {time.strftime('%H:%M:%S', time.localtime(t))}.{int(t % 1 * 1000):03d} {name} {kind} {parts}"
        )
        if kind == "assigned":
            owned[name] = parts
            if all(len(owned.get(n, [])) == k for n, k in want.items()):
                return t
        else:
            owned[name] = []
    raise TimeoutError(f"wanted {want}, have {owned}")


async def invalid_session(bootstrap: str, topic: str) -> None:
    print("invalid-session: session_timeout_ms=3000")
    c = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=f"inv-{suffix()}", session_timeout_ms=3000,
                         heartbeat_interval_ms=1000)  # fmt: skip
    await c.start()
    c.subscribe([topic])
    try:
        await asyncio.wait_for(c.getmany(timeout_ms=5000), 10)
        print("    no error raised")
    except Exception as exc:
        print(f"    getmany() raised {type(exc).__module__}.{type(exc).__qualname__}: {exc}")
    finally:
        await c.stop()


def kill_scenario(args: argparse.Namespace, topic: str, session_ms: int, graceful: bool) -> None:
    how = "clean stop (LeaveGroup)" if graceful else "SIGKILL"
    hb = args.heartbeat_ms or session_ms // 3
    print(f"{'leave' if graceful else 'kill'}: session.timeout.ms={session_ms}, heartbeat {hb} ms, {how}")
    group = f"rb-{suffix()}"
    owned: dict[str, list[int]] = {}
    a = Member(args, "A", group, topic, session_ms)
    wait_for(owned, {"A": 4})
    b = Member(args, "B", group, topic, session_ms)
    wait_for(owned, {"A": 2, "B": 2})
    time.sleep(1.0)
    t_kill = b.term() if graceful else b.kill()
    owned["B"] = []
    t_done = wait_for(owned, {"A": 4})
    print(f"  => A owns all 4 partitions {t_done - t_kill:.2f}s after B's {how}")
    a.kill()
    b.proc.wait()


def join_scenario(args: argparse.Namespace, topic: str, session_ms: int) -> None:
    print(f"join: A owns 4, C joins (session {session_ms} ms)")
    group = f"rb-{suffix()}"
    owned: dict[str, list[int]] = {}
    a = Member(args, "A", group, topic, session_ms)
    wait_for(owned, {"A": 4})
    time.sleep(0.5)
    t0 = time.time()
    c = Member(args, "C", group, topic, session_ms)
    t_done = wait_for(owned, {"A": 2, "C": 2})
    print(f"  => 2+2 {t_done - t0:.2f}s after spawning C (includes C's Python start, ~0.3 s)")
    a.kill()
    c.kill()


def static_scenario(args: argparse.Namespace, topic: str, session_ms: int) -> None:
    print(f"static: group_instance_id on both members, session {session_ms} ms")
    group = f"rb-static-{suffix()}"
    owned: dict[str, list[int]] = {}
    a = Member(args, "A", group, topic, session_ms, "member-a")
    wait_for(owned, {"A": 4})
    b = Member(args, "B", group, topic, session_ms, "member-b")
    wait_for(owned, {"A": 2, "B": 2})
    time.sleep(1.0)
    print("  SIGKILL B and restart it at once:")
    b.kill()
    owned["B"] = []
    t0 = time.time()
    b = Member(args, "B", group, topic, session_ms, "member-b")
    t_done = wait_for(owned, {"B": 2}, timeout=session_ms / 1000 + 20)
    print(f"  => restarted B owns 2 partitions {t_done - t0:.2f}s after restart")
    time.sleep(1.0)
    seen = []
    while not Member.events.empty():
        seen.append(Member.events.get())
    print(f"  events not yet shown (A should have none): {seen}")
    print("  SIGKILL B for good:")
    time.sleep(1.0)
    t_kill = b.kill()
    owned["B"] = []
    t_done = wait_for(owned, {"A": 4})
    print(f"  => A owns all 4 partitions {t_done - t_kill:.2f}s after SIGKILL of static B")
    a.term()
    a.proc.wait()


def slow_assign_scenario(args: argparse.Namespace, topic: str, session_ms: int, delay: float) -> None:
    """aiokafka stops heartbeating during a rebalance and restarts only after on_partitions_assigned
    returns: does a callback longer than the session timeout get the member evicted?"""
    print(
        f"slow-assign: one member, on_partitions_assigned sleeps {delay}s, session {session_ms} ms; watch 25 s"
    )
    group = f"rb-slow-{suffix()}"
    a = Member(args, "A", group, topic, session_ms, assign_delay=delay)
    t0 = time.time()
    n_assigned = 0
    while time.time() - t0 < 25:
        try:
            name, t, kind, parts = Member.events.get(timeout=0.5)
        except queue.Empty:
            continue
        n_assigned += kind == "assigned"
        print(f"    +{t - t0:5.2f}s {name} {kind} {parts}")
    print(f"  => {n_assigned} assignments in 25 s")
    a.kill()


async def copartition(bootstrap: str) -> None:
    """Two in-process members subscribed to two 4-partition topics with RangePartitionAssignor:
    does each get the same partition numbers of both (Kafka Streams-style tasks)?"""
    from aiokafka.coordinator.assignors.range import RangePartitionAssignor
    from aiokafka.coordinator.assignors.roundrobin import RoundRobinPartitionAssignor
    from aiokafka.coordinator.assignors.sticky.sticky_assignor import StickyPartitionAssignor

    for assignor in (RangePartitionAssignor, RoundRobinPartitionAssignor, StickyPartitionAssignor):
        t1, t2, group = f"co-a-{suffix()}", f"co-b-{suffix()}", f"co-{suffix()}"
        await create_topics(bootstrap, {t1: 4, t2: 4})
        cs = [
            AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, session_timeout_ms=6000,
                             heartbeat_interval_ms=500, partition_assignment_strategy=(assignor,))
            for _ in range(2)
        ]  # fmt: skip
        for c in cs:
            await c.start()
            c.subscribe([t1, t2])
        deadline = time.time() + 20
        while time.time() < deadline:
            await asyncio.gather(*(c.getmany(timeout_ms=200) for c in cs))
            owned = [c.assignment() for c in cs]
            if all(len(o) == 4 for o in owned):
                break
        desc = []
        for o in owned:
            by_topic = {t: sorted(tp.partition for tp in o if tp.topic == t) for t in (t1, t2)}
            desc.append(f"{by_topic[t1]}/{by_topic[t2]}")
        same = all(
            sorted(tp.partition for tp in o if tp.topic == t1)
            == sorted(tp.partition for tp in o if tp.topic == t2)
            for o in owned
        )
        print(
            f"copartition {assignor.name:<10} member partitions (topic a / topic b): {desc}  co-partitioned: {same}"
        )
        for c in cs:
            await c.stop()


def main() -> None:
    parser = base_parser(__doc__)
    parser.add_argument("mode", nargs="?", default="run", choices=["run", "member"])
    parser.add_argument("--sessions", default="6000,10000", help="session timeouts to test (ms)")
    parser.add_argument("--skip-static", action="store_true")
    parser.add_argument(
        "--heartbeat-ms", type=int, default=0, help="heartbeat interval (default: session / 3)"
    )
    parser.add_argument("--skip-invalid", action="store_true")
    parser.add_argument("--name")
    parser.add_argument("--group")
    parser.add_argument("--topic")
    parser.add_argument("--instance-id")
    parser.add_argument("--session-timeout-ms", type=int, default=6000)
    parser.add_argument(
        "--assign-delay", type=float, default=0.0, help="seconds to sleep in on_partitions_assigned"
    )
    parser.add_argument("--skip-slow", action="store_true")
    args = parser.parse_args()
    if args.mode == "member":
        asyncio.run(member(args))
        return
    topic = f"rb-{suffix()}"
    asyncio.run(create_topics(args.bootstrap, {topic: 4}))
    if not args.skip_invalid:
        asyncio.run(invalid_session(args.bootstrap, topic))
    sessions = [int(s) for s in args.sessions.split(",")]
    for s in sessions:
        kill_scenario(args, topic, s, graceful=False)
    kill_scenario(args, topic, sessions[0], graceful=True)
    join_scenario(args, topic, sessions[0])
    if not args.skip_static:
        static_scenario(args, topic, sessions[0])
    asyncio.run(copartition(args.bootstrap))
    if not args.skip_slow:
        slow_assign_scenario(args, topic, sessions[0], sessions[0] / 1000 * 0.5)
        slow_assign_scenario(args, topic, sessions[0], sessions[0] / 1000 * 1.5)


if __name__ == "__main__":
    main()
