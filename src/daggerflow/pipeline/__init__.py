"""The processing pipeline both runtimes share: the processor (batch, apply, commit, then act),
the job runner for user code, timers, the outbox, the ingress of listener and agent
messages, and the partition task that puts a store, a processor and timers together.

Nothing here imports aiokafka, sqlite3, httpx or starlette, nor the facade (``engine``): a
runtime hands the pipeline its store, its committer and its collaborators.
"""
