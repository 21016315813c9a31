"""Plain data: statuses, templates (definitions) and instances (runtime state).

Nothing in this package does I/O or imports from ``runtime``, ``log``, ``store`` or ``web``.
"""
