"""The Kafka runtime: the shared pipeline, partitioned, with Kafka as the log (optional extra
``daggerflow[kafka]``). Nothing outside this package imports aiokafka, and inside it only
``compat`` reads aiokafka's private state.

Read it as Kafka Streams: ``runtime`` composes the worker; partition tasks own their local
stores restored from the changelog (``restore``, ``standby``); each task commits its batch,
outbox and input offsets in one transaction of its own producer (``transactions``, the
exactly-once scheme), records fetched across a rebalance are dropped by ``guard`` and
partitions are fenced and activated by ``rebalance``; ``settings`` are the clients'
settings; ``admin`` creates and checks the topics; ``owners`` and ``remote`` find and ask the
worker that owns an instance; ``hanging`` ends transactions a broker restart left open;
``codec`` and ``partitioner`` are the wire format and Kafka's default partitioner;
``background`` stops the background tails. The measured facts behind the design are in
``docs/kafka-runtime-notes.md``.
"""
