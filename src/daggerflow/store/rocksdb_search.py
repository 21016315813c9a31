"""Instance search on the RocksDB store: the search rows, the profiles and the query.

====  ========================================================  ============================
tag   key fields                                                value
====  ========================================================  ============================
a     name, value, created, instance                            -- (a search row)
a     "" (an empty name), template, search keys (JSON text)     -- (a search profile)
A     instance, name                                            msgpack [value, created]
                                                                (the row's reverse: to move
                                                                or drop an instance's rows)
====  ========================================================  ============================

A query takes its candidates from the most selective index it has (a fully indexed
parameter: one ``a`` range; else the rows of a partly indexed one plus the listing of the
templates that do not index it; else the correlation index; else the status/template
listing, bounded by the creation times), reads them, checks each with
``model.query.matches`` and sorts them. A query of status, template and creation times only
in creation order walks the listing index and reads only its page.
"""

from __future__ import annotations

from collections.abc import Generator, Iterable
from typing import Any

import msgspec

from ..model.instance import Instance, decode_instance, decode_parameters
from ..model.query import InstanceQuery, matches, params_match, sort_key
from .keys import f64, text_field, text_fields
from .search_plan import param_plans

_pack = msgspec.msgpack.Encoder()
_unpack = msgspec.msgpack.Decoder()
_json = msgspec.json.Encoder()
_PROFILES = b"a" + text_field("")
_RUNNING = ("NOT_STARTED", "SUBMITTED", "EXECUTING")
_CHUNK = 1000
# Candidates' ids are encoded without ``text_field``'s cache: a long search would evict
# what the commits use from it.
_id_field = text_field.__wrapped__


def _index_prefix(status: str | None, template: str | None) -> bytes:
    if status and template:
        return b"b" + text_field(status) + text_field(template)
    if status:
        return b"s" + text_field(status)
    if template:
        return b"t" + text_field(template)
    return b"c"


class RocksSearch:
    """Mixed into ``RocksDBStore``: the search index's writes and the instance query."""

    # The store's ``Rdict``; write batches are ``rocksdict.WriteBatch`` (rocksdict stays in
    # ``store/rocksdb.py``).
    db: Any
    # The correlation index (``x``) holds the waiting listeners of this store's own
    # instances (false for a Kafka partition: it holds the entries it owns, of any instance).
    local_correlations: bool = True
    _profiles: dict[str, set[tuple[str, ...]]] | None = None

    def _scan(self, prefix: bytes, start: bytes | None = None) -> Generator[tuple[bytes, bytes], None, None]:
        raise NotImplementedError  # RocksDBStore's

    def _keys(self, prefix: bytes, limit: int | None = None, skip: int = 0) -> list[bytes]:
        raise NotImplementedError  # RocksDBStore's

    def count_instances(self, *, status: str | None, template: str | None) -> int:
        raise NotImplementedError  # RocksCounts'

    # Writes -----------------------------------------------------------------------------

    def _search_writes(
        self,
        wb: Any,
        puts: list[tuple[str, str, str, float]],
        dels: list[tuple[str, str]],
        profiles: list[tuple[str, tuple[str, ...]]],
    ) -> list[tuple[str, tuple[str, ...]]]:
        """Put a batch's search changes into ``wb``; return the profiles new to the store."""
        for instance, name in dels:
            self._drop_row(wb, text_field(instance), text_field(name))
        for instance, name, value, created in puts:
            sid, sname = text_field(instance), text_field(name)
            self._drop_row(wb, sid, sname)
            wb.put(b"a" + sname + text_field(value) + f64(created) + sid, b"")
            wb.put(b"A" + sid + sname, _pack.encode((value, created)))
        known = self._search_profiles()
        fresh = list(dict.fromkeys(p for p in profiles if p[1] not in known.get(p[0], ())))
        for template, keys in fresh:
            wb.put(_PROFILES + text_field(template) + text_field(_json.encode(list(keys)).decode()), b"")
        return fresh

    def _profiles_written(self, fresh: list[tuple[str, tuple[str, ...]]]) -> None:
        for template, keys in fresh:
            self._search_profiles().setdefault(template, set()).add(keys)

    def _drop_row(self, wb: Any, sid: bytes, sname: bytes) -> None:
        old = self.db.get(b"A" + sid + sname)
        if old is not None:
            value, created = _unpack.decode(old)
            wb.delete(b"a" + sname + text_field(value) + f64(created) + sid)
            wb.delete(b"A" + sid + sname)

    def _drop_search_rows(self, wb: Any, sid: bytes) -> None:
        """Delete every search row of an instance (it is deleted)."""
        prefix = b"A" + sid
        for key, raw in self._scan(prefix):
            (name,) = text_fields(key[len(prefix) :])
            value, created = _unpack.decode(raw)
            wb.delete(b"a" + text_field(name) + text_field(value) + f64(created) + sid)
            wb.delete(key)

    def _search_profiles(self) -> dict[str, set[tuple[str, ...]]]:
        if self._profiles is None:
            profiles: dict[str, set[tuple[str, ...]]] = {}
            for key in self._keys(_PROFILES):
                template, keys = text_fields(key[len(_PROFILES) :])
                profiles.setdefault(template, set()).add(tuple(msgspec.json.decode(keys)))
            self._profiles = profiles
        return self._profiles

    # The query --------------------------------------------------------------------------

    def query_instances(self, query: InstanceQuery, *, limit: int, offset: int) -> list[Instance]:
        if limit <= 0:
            return []
        if _listing_only(query):
            return self._listing_page(query, limit, offset)
        found = self._matches(query)
        key, reverse = sort_key(query)
        found.sort(key=key, reverse=reverse)
        return found[offset : offset + limit]

    def count_query(self, query: InstanceQuery) -> int:
        if query.is_plain():  # the kept counts (``store/rocksdb_counts.py``), not a walk
            return self.count_instances(status=query.status, template=query.template)
        if _listing_only(query):
            return sum(1 for _ in self._listing_ids(query))
        return len(self._matches(query))

    def _matches(self, query: InstanceQuery) -> list[Instance]:
        ids = list(self._candidates(query))
        out = []
        for start in range(0, len(ids), _CHUNK):  # (bounded memory for a long candidate list)
            keys: list[str | int | float | bytes | bool] = [b"i" + _id_field(i) for i in ids[start : start + _CHUNK]]
            found: list[bytes | None] = self.db.get(keys) or []
            for data in found:
                if data is None:
                    continue
                if query.params and not params_match(decode_parameters(data), query):
                    continue  # (the whole record is decoded only for a candidate that may match)
                inst = decode_instance(data)
                if matches(inst, query):
                    out.append(inst)
        return out

    def _candidates(self, query: InstanceQuery) -> Iterable[str]:
        """Ids of a superset of the matches, from the most selective index at hand."""
        plans = param_plans(query, self._search_profiles())
        full = [p for p in plans if not p.unindexed]
        if full:
            sets = [set(self._rows(p.name, p.value)) for p in full]
            return set.intersection(*sets)
        partial = [p for p in plans if not p.scan_only]
        if partial:
            plan = partial[0]
            ids = set(self._rows(plan.name, plan.value))
            for template in plan.unindexed:
                ids.update(self._listing_ids(query, template=template))
            return ids
        if query.waiting_on is not None or query.correlation is not None:
            if not self.local_correlations:
                statuses = (query.status,) if query.status is not None else _RUNNING
                return {i for s in statuses for i in self._listing_ids(query, status=s)}
            if query.waiting_on is not None:
                prefix = b"x" + text_field(query.waiting_on)
                return {text_fields(k[len(prefix) :])[2] for k in self._keys(prefix)}
            # A correlation value alone: every waiting listener's entry is read.
            wanted = query.correlation
            return {f[3] for k in self._keys(b"x") if (f := text_fields(k[1:]))[2] == wanted}
        return self._listing_ids(query)

    def _rows(self, name: str, value: str) -> Generator[str, None, None]:
        prefix = b"a" + text_field(name) + text_field(value)
        for key in self._keys(prefix):
            yield text_fields(key[len(prefix) + 8 :])[0]

    def _listing_ids(
        self, query: InstanceQuery, *, status: str | None = None, template: str | None = None
    ) -> list[str]:
        """Ids from the status/template listing, within the query's creation times."""
        prefix = _index_prefix(status or query.status, template or query.template)
        start = prefix + f64(query.created_after) if query.created_after is not None else None
        stop = f64(query.created_before) if query.created_before is not None else None
        cut = len(prefix)
        out = []
        scan = self._scan(prefix, start)
        try:
            for key, _ in scan:
                if stop is not None and key[cut : cut + 8] >= stop:
                    break
                out.append(text_fields(key[cut + 8 :])[0])
        finally:
            scan.close()
        return out

    def _listing_page(self, query: InstanceQuery, limit: int, offset: int) -> list[Instance]:
        """One page straight from the listing index, in either direction: only the keys up
        to the page's end are read."""
        prefix = _index_prefix(query.status, query.template)
        cut = len(prefix)
        low = f64(query.created_after) if query.created_after is not None else None
        high = f64(query.created_before) if query.created_before is not None else None
        ids: list[str] = []
        want = offset + limit
        if query.sort.startswith("-"):
            it = self.db.iter()
            try:
                it.seek_for_prev(prefix + high if high is not None else prefix + b"\xff" * 9)
                while it.valid() and len(ids) < want:
                    key: bytes = it.key()
                    if not key.startswith(prefix) or (low is not None and key[cut : cut + 8] < low):
                        break
                    ids.append(text_fields(key[cut + 8 :])[0])
                    it.prev()
            finally:
                del it
        else:
            scan = self._scan(prefix, prefix + low if low is not None else None)
            try:
                for key, _ in scan:
                    if len(ids) >= want or (high is not None and key[cut : cut + 8] >= high):
                        break
                    ids.append(text_fields(key[cut + 8 :])[0])
            finally:
                scan.close()
        page: list[str | int | float | bytes | bool] = [b"i" + _id_field(i) for i in ids[offset:]]
        found: list[bytes | None] = (self.db.get(page) or []) if page else []
        return [decode_instance(data) for data in found if data is not None]


def _listing_only(query: InstanceQuery) -> bool:
    """Status, template and creation times only, in creation order: the listing's own."""
    return (
        query.sort.endswith("created")
        and not query.params
        and query.version is None
        and query.waiting_on is None
        and query.correlation is None
        and query.updated_after is None
    )

