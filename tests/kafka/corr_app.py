"""An application for the correlation tests of the Kafka runtime (test_kafka_correlation.py),
configured from the environment like ``daggerflow.demo.kafka_app``.

    python -m daggerflow worker tests/kafka/corr_app.py:engine --broker kafka://127.0.0.1:9092

Environment: DAGGERFLOW_BROKER, DAGGERFLOW_APP (default "corr"), DAGGERFLOW_PARTITIONS (12),
DAGGERFLOW_GUARANTEE (exactly_once), DAGGERFLOW_DATA (datadir), CORR_DEAD_LETTER (a name: the
dead-letter topic is ``{app}.<name>``; unset: the runtime's default), CORR_HOLD_FILE (a path:
an agent "holder" reads ``{app}.hold`` and holds a message saying ``"hold": true`` until that
file exists, so the messages behind it stay unread).

One-task templates, each waiting on one listener topic (the topics' names are
``{app}.<name>``, so every test application has its own):

- ``BoxWait`` on ``{app}.boxes``: waits for a message naming its ``box_id``; a message's
  ``box_id`` may be a list (one message, many correlation values).
- ``EarlyWait`` on ``{app}.early``, the one topic with an ``unmatched_message_ttl``: a
  message that finds no waiting instance is kept and delivered when one starts waiting.
- ``DedupeWait`` on ``{app}.dedupe``: its listener names each message (``msg_id``), so a
  message id seen twice runs once; it completes on a message saying ``"last": true``.
- ``SharedWait`` and ``FirstWait`` on ``{app}.shared``: one topic, two listener types, the
  second ``match_only_one``.

Every listener records what it received in the runtime parameters, which the update topic
``{app}.updates`` shows.
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

from daggerflow import DAGBuilderHelper, Dagger, KafkaListenerTask, TaskLookupKey

TTL = 600.0  # seconds an unmatched message of {app}.early is kept


def _decode(payload: Any) -> Any:
    return json.loads(payload.decode() if isinstance(payload, bytes) else payload)


class BoxListener(KafkaListenerTask[str, str]):
    correlatable_key = "box_id"

    async def get_correlatable_keys_from_payload(self, payload: Any) -> list[TaskLookupKey]:
        value = _decode(payload)[self.correlatable_key]
        return [(self.correlatable_key, v) for v in (value if isinstance(value, list) else [value])]

    async def on_message(self, runtime_parameters: dict[str, Any], *args: Any, **kwargs: Any) -> bool:
        runtime_parameters["messages"] = [*runtime_parameters.get("messages", []), _decode(args[0])]
        return True


class EarlyListener(BoxListener):
    pass


class FirstListener(BoxListener):
    match_only_one = True


class DedupeListener(KafkaListenerTask[str, str]):
    correlatable_key = "box_id"

    async def get_correlatable_keys_from_payload(self, payload: Any) -> list[TaskLookupKey]:
        return [(self.correlatable_key, _decode(payload)[self.correlatable_key])]

    def get_message_id(self, payload: Any) -> str | None:
        return str(_decode(payload)["msg_id"])

    async def on_message(self, runtime_parameters: dict[str, Any], *args: Any, **kwargs: Any) -> bool:
        message = _decode(args[0])
        runtime_parameters["seen"] = [*runtime_parameters.get("seen", []), message["msg_id"]]
        return bool(message.get("last", False))


TEMPLATES = {"BoxWait": ("boxes", BoxListener), "EarlyWait": ("early", EarlyListener)}
TEMPLATES["DedupeWait"] = ("dedupe", DedupeListener)
TEMPLATES["SharedWait"] = ("shared", BoxListener)
TEMPLATES["FirstWait"] = ("shared", FirstListener)


def _register(engine: Dagger, app: str) -> None:
    helper = DAGBuilderHelper(engine)
    for name, (topic, listener) in TEMPLATES.items():
        wait = helper.generic_listener_task_builder(
            topic=f"{app}.{topic}", task_type=listener, process_name="WAIT"
        )
        process = helper.generic_process_builder(
            process_name="WAIT", root_task=helper.build_and_link_tasks([wait])
        )
        template = helper.generic_template(
            template_name=name, root_process=helper.build_and_link_processes([process])
        )
        engine.add_template(name, template)


def build(role: str = "worker", **options: Any) -> Dagger:
    env = os.environ
    app = env.get("DAGGERFLOW_APP", "corr")
    settings: dict[str, Any] = {
        "broker": env.get("DAGGERFLOW_BROKER", "kafka://127.0.0.1:9092"),
        "application_name": app,
        "kafka_partitions": int(env.get("DAGGERFLOW_PARTITIONS", "12")),
        "processing_guarantee": env.get("DAGGERFLOW_GUARANTEE", "exactly_once"),
        "datadir": env.get("DAGGERFLOW_DATA", "daggerflow-data"),
        "web_port": 0 if role == "worker" else None,
        "role": role,
        "task_update_topic": f"{app}.updates",
        "unmatched_message_ttl": {f"{app}.early": TTL},
    }
    if env.get("CORR_DEAD_LETTER"):
        settings["dead_letter_topic"] = f"{app}.{env['CORR_DEAD_LETTER']}"
    settings.update(options)
    engine = Dagger(**settings)
    _register(engine, app)
    if env.get("CORR_HOLD_FILE"):
        _hold_agent(engine, app, Path(env["CORR_HOLD_FILE"]))
    return engine


def _hold_agent(engine: Dagger, app: str, release: Path) -> None:
    @engine.agent(f"{app}.hold", name="holder")
    async def holder(value: Any) -> None:
        if _decode(value).get("hold"):
            async with asyncio.timeout(120):  # (a test that never releases still ends)
                while not release.exists():
                    await asyncio.sleep(0.02)


engine = build()
