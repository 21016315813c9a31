"""The ``daggerflow`` command line (also ``python -m daggerflow``).

- ``daggerflow worker MODULE[:ATTR]`` runs a worker: imports the module, finds its
  ``Dagger`` engine, applies the command-line overrides and calls ``engine.main()``.
- ``daggerflow demo pizza`` runs the README's pizza workflow end to end and reports.
- ``instances``, ``instance``, ``templates``, ``create`` and ``send`` talk to a running
  worker's REST API (``--url``, default ``$DAGGERFLOW_URL`` or http://127.0.0.1:6066), and
  so do the operators' ``retry``, ``skip``, ``complete``, ``submit``, ``patch`` and ``stop``
  (``stop``/``retry --filter ...``: bulk jobs, ``bulk``), and ``schedules`` (list, add,
  delete, pause, resume), and ``migrate`` (running instances to the registered template
  version); ``ui`` serves the web console of the worker at ``--url``.

Modules: ``group`` (the command group, consoles, usage errors), ``target`` (importing the
user's engine), ``worker``, ``client`` (talking to a worker's REST API), ``commands``
(the REST client commands), ``operate`` (the operators' commands), ``schedules``, ``migrate`` and ``history``; ``console`` (``daggerflow ui --url``: the web console of a remote worker); the demo's command is ``daggerflow.demo.command``.
"""

from __future__ import annotations

from . import bulk, commands, console, history, migrate, operate, schedules, worker
from .group import cli, main
from .target import load_engine

__all__ = ["bulk", "cli", "commands", "console", "history", "load_engine", "main", "migrate", "operate", "schedules", "worker"]
