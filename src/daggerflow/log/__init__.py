"""Kafka as the log of the distributed runtime (issue #3; optional extra ``daggerflow[kafka]``).

- ``kafka_admin``: the runtime's internal topics (names, partition counts, configs) and
  ``ensure_topics``, which creates them up front and refuses to start on a topic of the wrong
  shape (auto-created topics get the broker's defaults: 3 partitions, ``cleanup.policy=delete``).
- ``kafka_eos``: exactly-once building blocks with aiokafka (no KIP-447): one transactional
  producer per input partition (``PartitionTransactions``), the next-expected-offset and epoch
  guard against records fetched across a rebalance (``AssignmentGuard``), and a rebalance listener
  that returns at once and fences, restores and seeks in the background on paused partitions
  (``RebalanceListener``). Fenced producers surface as ``TaskMigrated``.

The measured facts behind them are in ``docs/kafka-runtime-notes.md``; the spike scripts that
established them are in ``bench/kafka_spike/``. None of this is wired into the engine yet.
"""
