"""Timer precision: how late do durable timers fire?

Creates N workflows whose single TriggerTask is due at a random time 0.2-1.5 s after its creation
(real clock, SQLite file store) and records, in the task, how long after its due time it
started. Prints p50/p99/max lateness. The design target: within 100 ms of the due time.

    .venv/bin/python bench/timers.py --workflows 2000
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import tempfile
import time
from typing import Any

from daggerflow import DAGBuilderHelper, Dagger, TriggerTask


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def run(workflows: int) -> None:
    lateness: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        engine = Dagger(store=f"sqlite:///{tmp}/timers.db", web_port=None)

        class Alarm(TriggerTask[str, str]):
            async def execute(self, runtime_parameters: dict[str, Any], workflow_instance: Any = None) -> None:
                lateness.append(time.time() - runtime_parameters["due"])

        helper = DAGBuilderHelper(engine)

        @engine.register_template("Alarm")
        def alarm(name: str) -> Any:
            task = helper.generic_trigger_task_builder(task_type=Alarm, name="alarm", time_to_execute_key="due")
            process = helper.generic_process_builder(process_name="p", root_task=task)
            return helper.generic_template(template_name=name, root_process=process)

        rng = random.Random(7)
        async with engine:
            template = engine.template_dags["Alarm"]
            ids = []
            start = time.time()
            for i in range(workflows):
                # Relative to this creation: a due time before the instance exists would
                # measure the creation loop, not the timer service.
                due = time.time() + 0.2 + rng.random() * 1.3
                inst = await template.create_instance(f"t{i}", submit_task=True, due=due)
                ids.append(inst.id)
            created = time.time() - start
            for iid in ids:
                await engine.wait_for(iid, timeout=60)
    ms = [v * 1000 for v in lateness]
    print(f"timers: {workflows} fired (created in {created:.2f} s)")
    print(f"lateness ms: p50 {statistics.median(ms):.1f}  p99 {percentile(ms, 0.99):.1f}  max {max(ms):.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workflows", type=int, default=2000)
    args = parser.parse_args()
    asyncio.run(run(args.workflows))


if __name__ == "__main__":
    main()
