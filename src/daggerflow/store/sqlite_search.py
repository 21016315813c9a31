"""Instance search on the SQLite store (mixed into ``SQLiteStore``): queries answered with
the plan of ``store/search_plan.py`` over the ``search`` and ``search_profiles`` tables, the
correlation index and the instances' own columns. (sqlite3 itself stays in ``store/sqlite.py``:
this reads through the store's connection.)"""

from __future__ import annotations

from typing import Any

import msgspec

from ..model.instance import Instance, decode_instance, decode_parameters
from ..model.query import InstanceQuery, matches, params_match
from .search_plan import SqlPlan, sql_plan


class SQLiteSearch:
    db: Any  # the store's sqlite3 connection
    local_correlations: bool
    _profiles: dict[str, set[tuple[str, ...]]] | None
    _known: set[tuple[str, tuple[str, ...]]] | None = None  # the profiles, as pairs

    def query_instances(self, query: InstanceQuery, *, limit: int, offset: int) -> list[Instance]:
        if limit <= 0:
            return []
        plan = self._plan(query)
        sql = f"SELECT i.data FROM instances i{plan.where}{plan.order}"
        if plan.exact:
            rows = self.db.execute(sql + " LIMIT ? OFFSET ?", (*plan.args, limit, offset))
            return [decode_instance(r[0]) for r in rows]
        out: list[Instance] = []
        skip = offset
        for (data,) in self.db.execute(sql, plan.args):
            if query.params and not params_match(decode_parameters(data), query):
                continue  # (the whole record is decoded only for a candidate that may match)
            inst = decode_instance(data)
            if not matches(inst, query):
                continue
            if skip:
                skip -= 1
                continue
            out.append(inst)
            if len(out) >= limit:
                break
        return out

    def count_query(self, query: InstanceQuery) -> int:
        plan = self._plan(query)
        if plan.exact:
            return int(self.db.execute(f"SELECT COUNT(*) FROM instances i{plan.where}", plan.args).fetchone()[0])
        rows = self.db.execute(f"SELECT i.data FROM instances i{plan.where}", plan.args)
        return sum(
            1
            for (data,) in rows
            if (not query.params or params_match(decode_parameters(data), query))
            and matches(decode_instance(data), query)
        )

    def query_plan(self, query: InstanceQuery) -> list[str]:
        """Diagnostics: SQLite's ``EXPLAIN QUERY PLAN`` of ``query`` (one line per step)."""
        plan = self._plan(query)
        rows = self.db.execute(f"EXPLAIN QUERY PLAN SELECT i.data FROM instances i{plan.where}{plan.order}", plan.args)
        return [str(r[3]) for r in rows]

    def _plan(self, query: InstanceQuery) -> SqlPlan:
        return sql_plan(query, self._search_profiles(), correlations=self.local_correlations)

    def _search_profiles(self) -> dict[str, set[tuple[str, ...]]]:
        if self._profiles is None:
            profiles: dict[str, set[tuple[str, ...]]] = {}
            for template, keys in self.db.execute("SELECT template, keys FROM search_profiles"):
                profiles.setdefault(template, set()).add(tuple(msgspec.json.decode(keys)))
            self._profiles = profiles
        return self._profiles

    def _new_profiles(self, profiles: list[tuple[str, tuple[str, ...]]]) -> list[tuple[str, tuple[str, ...]]]:
        if self._known is None:
            self._known = {(t, keys) for t, kinds in self._search_profiles().items() for keys in kinds}
        fresh = set(profiles) - self._known  # (a set difference: nearly every batch has none)
        return sorted(fresh) if fresh else []

    def _profiles_written(self, fresh: list[tuple[str, tuple[str, ...]]]) -> None:
        for template, keys in fresh:
            self._search_profiles().setdefault(template, set()).add(keys)
            if self._known is not None:
                self._known.add((template, keys))
