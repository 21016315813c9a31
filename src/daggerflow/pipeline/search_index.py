"""A batch's changes to the search index (``model.query.search_rows``): written only for the
instances whose searchable parameters may have changed, and for those deleted."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from ..model.instance import Instance
from ..model.query import search_names, search_rows
from ..store.base import WriteBatch


def search_changes(
    ids: Iterable[str],
    changed: Mapping[str, Instance | None],
    before: Mapping[str, Instance | None],
    batch: WriteBatch,
) -> None:
    """Add to ``batch`` the difference between the rows the store holds (those of each
    instance's committed state, ``before``) and the rows of its new state (``changed``; an
    id missing there was deleted)."""
    for iid in ids:
        inst = changed.get(iid)
        committed = before.get(iid)
        if inst is None:
            batch.search_del.extend((iid, name) for name in search_rows(committed))
            continue
        names = search_names(inst)
        new = search_rows(inst, names)
        if committed is None:  # created: the store learns which names it indexes
            batch.search_profiles.append((inst.template_name, names))
            old: dict[str, str] = {}
        else:
            old = search_rows(committed)
            if old == new:
                continue
            batch.search_del.extend((iid, name) for name in old if name not in new)
        created = inst.root.time_created
        batch.search_put.extend((iid, name, text, created) for name, text in new.items() if old.get(name) != text)
