"""The Kafka runtime: the shared pipeline, partitioned, with Kafka as the log (optional extra
``daggerflow[kafka]``). Nothing outside this package imports aiokafka, and inside it only
``compat`` reads aiokafka's private state.

Read it as Kafka Streams. ``runtime`` composes the worker (``context`` is what its parts
share, ``supervisor`` lists its long-lived loops and which are fatal). The poll phase is
``fetch``. ``task_manager`` owns each group's partitions and their states (``rebalance``
only hands it the consumer's callbacks); ``active_tasks`` are the main group's stateful
partition tasks, their local stores restored from the changelog (``restore``, ``standby``)
and wiped when corrupt. ``collector`` commits a batch's records (``records``) with its input
offsets, in one transaction of the partition's own producer (``transactions``, the
exactly-once scheme); records fetched across a rebalance are dropped by ``guard``.
``listeners`` matches or routes listener messages, ``topic_loop`` runs the stateless
listener-router and agent groups. ``settings`` are the clients' settings and the factories every client is made by, with the
TLS/SASL settings of ``client_options``; ``preflight`` is the first contact with the brokers
(a wrong password or CA fails the start at once, saying why); ``admin`` creates
and checks the topics; ``owners`` and ``remote`` find and ask the worker that owns an
instance; ``hanging`` ends transactions a broker restart left open; ``codec`` and
``partitioner`` are the wire format and Kafka's default partitioner; ``background`` stops
the background tails. The measured facts behind the design are in
``docs/kafka-runtime-notes.md``.
"""
