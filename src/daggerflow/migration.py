"""Moving running instances to another version of their template. A part of the facade
(``Dagger`` inherits it).

The target is the version this process registers (the current code): its template builds
each instance's new node tree, which travels in a ``Migrate`` event to the instance's owner
(single writer; on Kafka through the owner's partition, exactly-once) where the pure
``machine.migrate`` carries the state over or refuses. The plan is made here first, from the
state as last committed, so that a dry run and the refusals answer at once; the owner plans
again against the state it holds when the event arrives.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from typing import TYPE_CHECKING, Any

import msgspec

from .errors import DaggerError, InvalidFilter, InvalidInput, TaskInvalidState, TooLarge
from .machine.events import Migrate
from .machine.migrate import plan
from .model.instance import Instance, copy_params
from .model.query import InstanceQuery, query_from_filter
from .model.template import instantiate
from .model.versions import RUNNING_STATUSES, MigrationOutcome, MigrationReport, describe_spec
from .pipeline.clock import Clock
from .pipeline.ports import Runtime

if TYPE_CHECKING:
    from .registry import Registry
    from .templates import ITemplateDAG

#: How many instances one page of the selection reads (every worker, on Kafka).
PAGE = 500


class Migration:
    _registry: Registry
    _runtime: Callable[[], Runtime]
    clock: Clock

    async def migrate(
        self,
        template: str,
        from_version: str,
        to_version: str | None = None,
        *,
        node_map: Mapping[str, str] | None = None,
        filter: Mapping[str, Any] | None = None,
        dry_run: bool = False,
        actor: str | None = None,
    ) -> MigrationReport:
        """Move the running instances of ``template`` at ``from_version`` (and matching
        ``filter``, the keys of the instance listing) to ``to_version`` (default, and the only
        version possible: the one registered here). Node states are carried over by name, or
        by ``node_map`` (old node name -> new node name); new nodes start NOT_STARTED. Each
        instance is migrated or refused with the reason; ``dry_run`` changes nothing."""
        runtime = self._runtime()
        registered = self._registry.template(str(template)) if isinstance(template, str) else None
        if registered is None:
            raise InvalidInput(f"template must be a template name, got {template!r}")
        current = registered.spec.version()
        if not isinstance(from_version, str) or not from_version:
            raise InvalidInput("from_version must be a template version (a non-empty string)")
        target_version = current if to_version is None else to_version
        if target_version != current:
            raise InvalidInput(
                f"version {target_version!r} of {template!r} is not registered in this worker: a migration "
                f"goes to the version of the code that runs, {current}"
            )
        if from_version == target_version:
            raise InvalidInput(f"from_version and to_version are both {target_version}")
        mapping = _checked_map(node_map, registered)
        query = _checked_query(filter, template, from_version)
        outcomes: list[MigrationOutcome] = []
        async for instance in _matching(runtime, query):
            outcomes.append(await self._one(runtime, registered, instance, mapping, from_version, dry_run, actor))
        migrated = sum(1 for o in outcomes if o.action == "migrate")
        return MigrationReport(
            template=template, from_version=from_version, to_version=target_version, dry_run=dry_run,
            matched=len(outcomes), migrated=migrated, refused=len(outcomes) - migrated, instances=outcomes,
        )  # fmt: skip

    async def _one(
        self,
        runtime: Runtime,
        template: ITemplateDAG,
        instance: Instance,
        node_map: dict[str, str],
        from_version: str,
        dry_run: bool,
        actor: str | None,
    ) -> MigrationOutcome:
        iid = instance.id
        try:
            target = instantiate(
                template.spec, iid, copy_params(instance.runtime_parameters), now=self.clock.now(),
                partition_key_lookup=instance.partition_key_lookup, overrides=template.overrides(),
            )  # fmt: skip
        except DaggerError as exc:
            return MigrationOutcome(id=iid, action="refuse", reason=f"the target version cannot be built for it: {exc}")
        planned = plan(instance, target, node_map, from_version)
        if planned.instance is None:
            return MigrationOutcome(id=iid, action="refuse", reason=planned.refusal)
        if dry_run:
            return MigrationOutcome(id=iid, action="migrate")
        try:
            applied, result = await runtime.call(iid, Migrate(target, from_version, node_map, actor))
        except (TaskInvalidState, TooLarge) as exc:
            return MigrationOutcome(id=iid, action="refuse", reason=str(exc))
        if applied and result is None:
            return MigrationOutcome(id=iid, action="refuse", reason="the instance no longer exists")
        return MigrationOutcome(id=iid, action="migrate", sent=not applied)


def _checked_map(node_map: Mapping[str, str] | None, template: ITemplateDAG) -> dict[str, str]:
    if node_map is None:
        return {}
    if not isinstance(node_map, Mapping):
        raise InvalidInput("node_map must be an object of old node name -> new node name")
    names = {n.name for n in describe_spec(template.spec).nodes}
    out: dict[str, str] = {}
    for old, new in node_map.items():
        if not (isinstance(old, str) and isinstance(new, str) and old and new):
            raise InvalidInput(f"node_map: names must be non-empty strings, got {old!r}: {new!r}")
        if new not in names:
            known = ", ".join(sorted(names))
            raise InvalidInput(f"node_map: the target version has no node {new!r}; its nodes: {known}")
        out[old] = new
    if len(set(out.values())) < len(out):
        raise InvalidInput("node_map: two old nodes are mapped to one new node")
    return out


def _checked_query(filter: Mapping[str, Any] | None, template: str, from_version: str) -> InstanceQuery:
    query = query_from_filter(filter)
    if query.template not in (None, template):
        raise InvalidFilter(f"filter: template {query.template!r} is not the migration's template {template!r}",
                            "template")  # fmt: skip
    if query.version not in (None, from_version):
        raise InvalidFilter(f"filter: version {query.version!r} is not from_version {from_version!r}", "version")
    if query.status is not None and query.status not in RUNNING_STATUSES:
        raise InvalidFilter(f"filter: only running instances migrate ({', '.join(RUNNING_STATUSES)}), "
                            f"not {query.status}", "status")  # fmt: skip
    fields = {f: getattr(query, f) for f in query.__struct_fields__}
    fields.update(template=template, version=from_version)
    return InstanceQuery(**fields)


async def _matching(runtime: Runtime, query: InstanceQuery) -> AsyncIterator[Instance]:
    """Every running instance that meets ``query`` (every worker's, on Kafka), each once.

    The indexed query across workers (``Runtime.list_all``), a page at a time, oldest first
    and keyed on the creation time rather than an offset: a page's instances that migrate
    leave the query, which must not make the next page skip any (and an offset would make
    every worker list all the pages before it again). Instances created at the same time as
    the page's last one come again and are passed over by id; a full page of only those
    grows the page until it gets past them."""
    seen: set[str] = set()
    statuses = (query.status,) if query.status is not None else RUNNING_STATUSES
    for status in statuses:
        after = query.created_after
        size = PAGE
        while True:
            page_query = msgspec.structs.replace(query, status=status, created_after=after, sort="created")
            page = await runtime.list_all(page_query, limit=size, offset=0)
            fresh = [i for i in page if i.id not in seen]
            for instance in fresh:
                seen.add(instance.id)
                yield instance
            if len(page) < size:
                break
            if fresh:
                after, size = page[-1].root.time_created, PAGE
            else:
                size *= 2
