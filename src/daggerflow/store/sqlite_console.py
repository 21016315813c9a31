"""The web console's reads on the SQLite store (mixed into ``SQLiteStore``; sqlite3 itself
stays in ``store/sqlite.py``: this reads through the store's connection).

Counts come from the instances' own columns with a GROUP BY, never from decoding records;
the instances that may have an open listener or a pending timer come from the correlation
index and the timer table, so that a store of a million ended instances reads only those.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from ..model.instance import Instance, decode_instance
from ..model.versions import RUNNING_STATUSES

_PAGE = 500


class SQLiteConsole:
    db: Any  # the store's sqlite3 connection
    local_correlations: bool

    def status_counts(self) -> list[tuple[str, str, int]]:
        """(template, status, count). A GROUP BY of both columns reads every row of the table
        (no index holds both: ~100 ms for 100,000 instances); the counts by status and by
        template each read one covering index only (~5 ms). So the most common status (most
        often COMPLETED) is not grouped by template: its count per template is the template's
        total less its counts in the other statuses, which are grouped from their rows."""
        by_status = {str(s): int(n) for s, n in self.db.execute("SELECT status, COUNT(*) FROM instances GROUP BY status")}
        if not by_status:
            return []
        common = max(by_status, key=lambda s: by_status[s])
        others = [s for s in by_status if s != common]
        totals = {str(t): int(n) for t, n in self.db.execute("SELECT template, COUNT(*) FROM instances GROUP BY template")}
        counts: dict[tuple[str, str], int] = {}
        if others:
            marks = ", ".join("?" for _ in others)
            rows = self.db.execute(
                f"SELECT template, status, COUNT(*) FROM instances INDEXED BY instances_status "
                f"WHERE status IN ({marks}) GROUP BY template, status",
                others,
            )
            counts = {(str(t), str(s)): int(n) for t, s, n in rows}
        rest: dict[str, int] = {}
        for (template, _), n in counts.items():
            rest[template] = rest.get(template, 0) + n
        for template, total in totals.items():
            if total > rest.get(template, 0):
                counts[(template, common)] = total - rest.get(template, 0)
        return [(t, s, n) for (t, s), n in sorted(counts.items())]

    def waiting_instances(self) -> Iterator[Instance]:
        """Every instance with an open listener or a pending timer (and, where the correlation
        index holds other partitions' entries, every instance that has not ended)."""
        if self.local_correlations:
            sql = (
                "SELECT data FROM instances WHERE id IN "
                "(SELECT instance FROM correlation UNION SELECT instance FROM timers) AND id > ? ORDER BY id LIMIT ?"
            )
            args: tuple[Any, ...] = ()
        else:
            marks = ", ".join("?" for _ in RUNNING_STATUSES)
            sql = f"SELECT data FROM instances WHERE status IN ({marks}) AND id > ? ORDER BY id LIMIT ?"
            args = RUNNING_STATUSES
        # Paged by id, so that no cursor stays open across the caller's work.
        after = ""
        while True:
            page = [decode_instance(r[0]) for r in self.db.execute(sql, (*args, after, _PAGE))]
            yield from page
            if len(page) < _PAGE:
                return
            after = page[-1].id
