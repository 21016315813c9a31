"""Kafka failover and restore benchmark (issue #3 §4).

    .venv/bin/python bench/kafka_failover.py                        # failover with 2 workers, then cold restore
    .venv/bin/python bench/kafka_failover.py --workers 3 --rate 300 --preload 5000
    .venv/bin/python bench/kafka_failover.py --skip-failover --cold-instances 20000

**Failover.** ``--workers`` worker processes of ``daggerflow.demo.kafka_app:engine`` (as in
``bench/kafka_pizza.py``: fresh app name, ``--no-web``), ``--preload`` completed workflows
first (so that a partition has state to restore), then a continuous open-loop load at
``--rate`` workflows/s from a client engine in this process. After ``--before`` seconds one
worker gets SIGKILL. For every partition (not only the killed worker's: aiokafka's
rebalances are eager, so all partitions stop until the new assignment):

- *active again*: a surviving worker logged ``task P active`` after the kill in every
  consumer group (main group, the READY listener's, the agent's; the log line's own
  timestamp), the latest of those;
- *processing again*: the first COMPLETED snapshot of an instance of that partition
  (``daggerflow.kafka.codec.partition_for``: Kafka's murmur2) written after the kill, i.e. at an offset of
  ``{app}.updates`` at or beyond its high watermark at the kill, as seen by a
  ``read_committed`` consumer in this process.

Failover time = from SIGKILL to the moment every partition is both. Also printed: when the
kill was detected (the first ``revoked tasks`` line of a survivor). The
restore rate is taken from the survivors' ``restored <topic>/<p> ... N records in S s``
lines. The load keeps running until ``--after`` seconds past the kill; then every created
workflow must complete (nothing lost), and the killed worker is restarted with its data
directory and must take partitions again (rejoin time).

**Cold restore.** One worker, ``--cold-instances`` completed workflows (20,000 by default),
stopped with SIGTERM; its data directory is deleted and it is started again: the time from
start to every partition active, and the restore lines (changelog records/s). Then the same
with the data directory kept (warm restart: checkpoint plus changelog tail), for contrast.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import shutil
import signal
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from kafka_pizza import (
    Completions,
    Driver,
    Restored,
    Worker,
    bootstrap_of,
    code_version,
    delete_app_topics,
    ids_covering,
    kinds,
    owners,
    partition_of,
    start_worker,
    stop_worker,
    summarise_owners,
    until,
    wait_cluster_ready,
)
from pizza import cpu_speed, machine, percentile

TARGET_FAILOVER_S = 10.0  # SIGKILL -> every partition processing again (issue #3 §4)


def restore_summary(restores: list[Restored]) -> dict[str, Any]:
    records = sum(r.records for r in restores)
    seconds = sum(r.seconds for r in restores)
    # Restores may run in parallel: the span from the first start to the last end is the wall time.
    span = max(r.at for r in restores) - min(r.at - r.seconds for r in restores) if restores else 0.0
    return {
        "lines": len(restores),
        "records": records,
        "seconds_summed": seconds,
        "records_per_s": records / seconds if seconds > 0 else None,
        "span_s": span,
        "records_per_wall_s": records / span if span > 0 else None,
        "largest": max(((r.records, r.seconds, f"{r.topic}/{r.partition}") for r in restores), default=None),
    }


def fmt_restores(s: dict[str, Any]) -> str:
    if not s["lines"]:
        return "no 'restored' lines"
    rate = f"{s['records_per_s']:,.0f} records/s" if s["records_per_s"] else "rate n/a (0 s)"
    big = s["largest"]
    wall = f"{s['records_per_wall_s']:,.0f} records/s" if s["records_per_wall_s"] else "n/a"
    return (
        f"{s['lines']} restore lines, {s['records']:,} records in {s['seconds_summed']:.2f} s summed: {rate}; "
        f"{s['span_s']:.2f} s from the first start to the last end: {wall}"
        f" (largest: {big[2]} {big[0]:,} records in {big[1]:.2f} s)"
    )


async def run_failover(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    bootstrap = bootstrap_of(args.broker)
    app = f"kf{uuid.uuid4().hex[:6]}_{args.workers}w"
    logdir = root / app
    logdir.mkdir(parents=True)
    print(
        f"\n== failover: {args.workers} workers, {args.guarantee}, {args.standbys} standby replicas, "
        f"app {app}, logs {logdir}",
        flush=True,
    )

    def spawn(i: int, suffix: str = "") -> Worker:
        return start_worker(
            f"worker{i}{suffix}",
            app,
            args.broker,
            args.guarantee,
            args.partitions,
            logdir / f"data{i}",
            logdir,
            extra_env={"DAGGERFLOW_STANDBYS": str(args.standbys)},
        )

    workers = [spawn(i) for i in range(args.workers)]
    completions = Completions(bootstrap, f"{app}.updates")
    out: dict[str, Any] = {
        "app": app,
        "workers": args.workers,
        "guarantee": args.guarantee,
        "standbys": args.standbys,
    }
    try:
        await wait_cluster_ready(workers, args.partitions, args.start_timeout)
        print(f"   cluster ready: {summarise_owners(owners(workers))}", flush=True)
        async with Driver(app, args.broker, args.guarantee, args.partitions, logdir / "client") as driver:
            await completions.start()
            warm = ids_covering(args.partitions, "warm-")
            await driver.burst(warm, len(warm))
            await completions.wait(warm, args.start_timeout)
            if args.preload:
                t0 = time.time()
                pre = [f"pre-{n}" for n in range(args.preload)]
                await driver.burst(pre, 64)
                await completions.wait(pre, args.timeout)
                print(f"   preload: {len(pre)} workflows completed in {time.time() - t0:.1f} s", flush=True)

            stop_load = asyncio.Event()
            load_ids = [f"load-{n}" for n in range(int(args.rate * (args.before + args.after + 600)))]
            load = asyncio.create_task(driver.open_loop(load_ids, args.rate, stop_load))
            await asyncio.sleep(args.before)  # the load runs in steady state before the kill

            victim = workers[-1]
            survivors = workers[:-1]
            for w in workers:
                w.log.poll()
            view = owners(workers)
            lost = sorted(p for p, name in view.items() if name == victim.name)
            hw = await completions.high_watermarks()
            t_kill = time.time()
            os.kill(victim.pid, signal.SIGKILL)
            victim.proc.wait()
            print(f"   SIGKILL {victim.name} (pid {victim.pid}) owning partitions {lost}", flush=True)

            groups = sorted(kinds(workers))

            def first_completion_after(p: int) -> float | None:
                times = [
                    s.at
                    for s in completions.seen.values()
                    if s.offset >= hw.get(s.tp, 0) and partition_of(s.instance_id, args.partitions) == p
                ]
                return min(times) if times else None

            def active_after(p: int) -> float | None:
                """When partition p was active again in every consumer group (None: not yet)."""
                latest = 0.0
                for kind in groups:
                    times = [
                        t
                        for w in survivors
                        for t, q, k in w.log.activations
                        if q == p and k == kind and t >= t_kill
                    ]
                    if not times:
                        return None
                    latest = max(latest, min(times))
                return latest

            # aiokafka's rebalances are eager: every partition stops until the group has a new
            # assignment, not only the killed worker's. So every partition is waited for.
            everything = range(args.partitions)

            def recovered() -> bool:
                return all(
                    active_after(p) is not None and first_completion_after(p) is not None for p in everything
                )

            await until(recovered, args.timeout, "every partition active and completing again", survivors)
            per_partition = {}
            for p in everything:
                a, c = active_after(p), first_completion_after(p)
                assert a is not None and c is not None
                per_partition[p] = {
                    "active_s": a - t_kill,
                    "first_completed_s": c - t_kill,
                    "lost": p in lost,
                }
            failover = max(max(v["active_s"], v["first_completed_s"]) for v in per_partition.values())
            first_active = min(v["active_s"] for v in per_partition.values())
            # Detection: the first revocation a survivor logs after the kill (the group noticed).
            revocations = [
                t for w in survivors for t, line in w.log.lines if t >= t_kill and "revoked tasks" in line
            ]
            detection = min(revocations) - t_kill if revocations else None
            print(
                f"   first revocation on a survivor (the kill detected) after "
                f"{detection if detection is not None else float('nan'):.2f} s",
                flush=True,
            )
            print(
                f"   failover: {failover:.2f} s (groups {groups}; first partition active in all groups after "
                f"{first_active:.2f} s, last after {max(v['active_s'] for v in per_partition.values()):.2f} s; "
                f"last first-completion {max(v['first_completed_s'] for v in per_partition.values()):.2f} s)",
                flush=True,
            )
            for p, v in per_partition.items():
                print(
                    f"     partition {p:2d}{' (killed worker)' if v['lost'] else ''}: active +{v['active_s']:.2f} s, "
                    f"first COMPLETED written after the kill seen +{v['first_completed_s']:.2f} s"
                )

            remaining = args.after - (time.time() - t_kill)
            if remaining > 0:
                await asyncio.sleep(remaining)  # keep the load on after the failover, as a user would
            stop_load.set()
            created = await load
            load_ids = load_ids[:created]
            await completions.wait(load_ids, args.timeout)
            print(
                f"   load: {created} workflows at {args.rate:.0f}/s, all completed (nothing lost)", flush=True
            )
            for w in survivors:
                w.log.poll()
            restores = [r for w in survivors for r in w.log.restores if r.at >= t_kill]
            rs = restore_summary(restores)
            print(f"   restores on the survivors after the kill: {fmt_restores(rs)}", flush=True)
            print(
                "     "
                + ", ".join(
                    f"p{r.partition}{'*' if r.partition in lost else ''} {r.records} in {r.seconds:.2f} s "
                    f"at +{r.at - t_kill:.2f}"
                    for r in sorted(restores, key=lambda r: r.at)
                )
                + " (* = the killed worker's)"
            )

            # Throughput around the kill, per second (completions seen on the updates topic).
            bins: dict[int, int] = {}
            for i in load_ids:
                b = math.floor(completions.seen[i].at - t_kill)
                bins[b] = bins.get(b, 0) + 1
            timeline = [(b, bins.get(b, 0)) for b in range(-3, int(args.after) + 1)]
            print(
                "   completions per second around the kill: " + " ".join(f"{b:+d}:{n}" for b, n in timeline)
            )
            latency = sorted((completions.seen[i].at - driver.created[i]) * 1000.0 for i in load_ids)

            # The killed worker comes back with its data directory and must take partitions again.
            t_restart = time.time()
            back = spawn(len(workers) - 1, "-restarted")
            cluster = [*survivors, back]
            await wait_cluster_ready(cluster, args.partitions, args.start_timeout)
            rejoin = max(t for t, _, _ in back.log.activations) - t_restart if back.log.activations else None
            print(
                f"   restarted {victim.name}: owners settled after {time.time() - t_restart:.2f} s "
                f"({summarise_owners(owners(cluster))}); its restores: {fmt_restores(restore_summary(back.log.restores))}",
                flush=True,
            )
            workers = [*survivors, back]
            out.update(
                killed_partitions=lost,
                kill_at=t_kill,
                detection_s=detection,
                failover_s=failover,
                first_active_s=first_active,
                per_partition=per_partition,
                restores_after_kill=rs,
                load_workflows=created,
                load_latency_ms={
                    "p50": percentile(latency, 50),
                    "p99": percentile(latency, 99),
                    "max": latency[-1],
                },
                timeline=timeline,
                rejoin_s=rejoin,
                preload=args.preload,
                rate=args.rate,
            )
        return out
    finally:
        await completions.stop()
        for w in workers:
            await stop_worker(w)
        if not args.keep_topics:
            with contextlib.suppress(Exception):
                await delete_app_topics(bootstrap, app)


async def time_start(w: Worker, partitions: int, timeout: float) -> dict[str, Any]:
    await wait_cluster_ready([w], partitions, timeout)
    last_active = max(t for t, _, _ in w.log.activations)
    ready = w.log.ready_at or last_active
    return {
        "ready_s": ready - w.started_at,
        "all_active_s": last_active - w.started_at,
        "restores": restore_summary(w.log.restores),
    }


async def run_cold_restore(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    bootstrap = bootstrap_of(args.broker)
    app = f"kr{uuid.uuid4().hex[:6]}"
    logdir = root / app
    logdir.mkdir(parents=True)
    datadir = logdir / "data0"
    print(
        f"\n== cold restore: 1 worker, {args.cold_instances} instances, {args.guarantee}, app {app}",
        flush=True,
    )

    def spawn(name: str) -> Worker:
        return start_worker(name, app, args.broker, args.guarantee, args.partitions, datadir, logdir)

    w = spawn("worker0")
    completions = Completions(bootstrap, f"{app}.updates")
    out: dict[str, Any] = {"app": app, "instances": args.cold_instances}
    try:
        first = await time_start(w, args.partitions, args.start_timeout)
        print(
            f"   first start (empty): all partitions active after {first['all_active_s']:.2f} s", flush=True
        )
        async with Driver(app, args.broker, args.guarantee, args.partitions, logdir / "client") as driver:
            await completions.start()
            t0 = time.time()
            ids = [f"order-{n}" for n in range(args.cold_instances)]
            await driver.burst(ids, 64)
            await completions.wait(ids, args.timeout)
            print(f"   {len(ids)} workflows completed in {time.time() - t0:.1f} s", flush=True)
        await completions.stop()
        size = sum(f.stat().st_size for f in datadir.rglob("*") if f.is_file())
        stop_s = await stop_worker(w)
        print(
            f"   stopped (SIGTERM) in {stop_s:.2f} s; data directory {size / 1e6:.1f} MB; deleting it",
            flush=True,
        )
        shutil.rmtree(datadir)

        w = spawn("worker0-cold")
        cold = await time_start(w, args.partitions, args.start_timeout)
        rec = cold["restores"]["records"]
        wall_rate = rec / cold["all_active_s"] if cold["all_active_s"] > 0 else 0.0
        print(
            f"   cold start: worker ready after {cold['ready_s']:.2f} s, all {args.partitions} partitions active "
            f"after {cold['all_active_s']:.2f} s; {fmt_restores(cold['restores'])}; "
            f"{wall_rate:,.0f} records/s over the whole start",
            flush=True,
        )
        await check_processing(w, app, args)
        await stop_worker(w)

        w = spawn("worker0-warm")
        warm = await time_start(w, args.partitions, args.start_timeout)
        print(
            f"   warm start (data directory kept): all partitions active after {warm['all_active_s']:.2f} s; "
            f"{fmt_restores(warm['restores'])}",
            flush=True,
        )
        out.update(
            data_mb=size / 1e6, cold=cold, cold_records_per_wall_s=wall_rate, warm=warm, first_start=first
        )
        return out
    finally:
        await completions.stop()
        await stop_worker(w)
        if not args.keep_topics:
            with contextlib.suppress(Exception):
                await delete_app_topics(bootstrap, app)


async def check_processing(w: Worker, app: str, args: argparse.Namespace) -> None:
    """After a restore, new workflows on every partition complete."""
    completions = Completions(bootstrap_of(args.broker), f"{app}.updates")
    async with Driver(
        app, args.broker, args.guarantee, args.partitions, w.datadir.parent / "client"
    ) as driver:
        await completions.start()
        try:
            ids = ids_covering(args.partitions, "after-restore-")
            await driver.burst(ids, len(ids))
            await completions.wait(ids, args.timeout)
        finally:
            await completions.stop()
    print(f"   after the restore: {len(ids)} new workflows (one per partition) completed", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--broker", default=os.environ.get("DAGGERFLOW_BROKER", "kafka://127.0.0.1:9092"))
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--partitions", type=int, default=12)
    parser.add_argument("--guarantee", default="exactly_once", choices=["exactly_once", "at_least_once"])
    parser.add_argument("--standbys", type=int, default=0, help="standby replicas per partition (failover)")
    parser.add_argument("--rate", type=float, default=200.0, help="continuous load, workflows/s")
    parser.add_argument("--preload", type=int, default=5000, help="completed workflows before the load")
    parser.add_argument("--before", type=float, default=5.0, help="seconds of load before the kill")
    parser.add_argument("--after", type=float, default=20.0, help="seconds of load after the kill")
    parser.add_argument("--cold-instances", type=int, default=20000, help="0: skip the cold restore")
    parser.add_argument("--skip-failover", action="store_true")
    parser.add_argument("--start-timeout", type=float, default=120.0)
    parser.add_argument("--timeout", type=float, default=600.0)
    parser.add_argument("--keep-topics", action="store_true")
    parser.add_argument("--keep-logs", action="store_true")
    parser.add_argument("--json", help="write the figures to this file")
    args = parser.parse_args(argv)

    commit = code_version()
    print(
        f"daggerflow Kafka failover/restore benchmark, {time.strftime('%Y-%m-%d %H:%M:%S %Z')}, commit {commit}"
    )
    print(f"machine: {machine()}; CPU speed index {cpu_speed():.1f}")
    print(f"command: {' '.join([os.path.basename(sys.executable), *sys.argv])}")
    root = Path(tempfile.mkdtemp(prefix="kafka-failover-"))
    results: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "commit": commit,
        "machine": machine(),
    }
    try:
        if not args.skip_failover:
            results["failover"] = asyncio.run(run_failover(args, root))
            f = results["failover"]["failover_s"]
            print(
                f"target failover < {TARGET_FAILOVER_S:.0f} s: {f:.2f} s -> {'met' if f < TARGET_FAILOVER_S else 'NOT met'}"
            )
        if args.cold_instances:
            results["cold_restore"] = asyncio.run(run_cold_restore(args, root))
    finally:
        if args.keep_logs:
            print(f"logs and state kept in {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"args": vars(args), **results}, fh, indent=2, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main())
