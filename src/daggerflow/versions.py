"""Template versions: which ones exist, how many instances of each are still running, and
what those need that this worker lacks. A part of the facade (``Dagger`` inherits it).

A version is a content hash of a template's definition (``WorkflowSpec.version``); a running
instance stays on the version it was created from (its node tree is in its record). Where
the definitions live: the version the code registers is described from the template; any
other is described from the node tree of a running instance of it; the embedded runtime also
keeps every definition it has seen in its store (``template_versions``), so a version is
still listed after its last instance ended. On Kafka each worker lists its registered
versions and those of the instances in the partitions it holds, and a listing merges every
worker's (``Runtime.versions_elsewhere``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from .model.versions import (
    TemplateVersion,
    decode_definition,
    decode_versions,
    describe_instance,
    describe_spec,
    encode_definition,
    merge_versions,
    missing_in,
)
from .pipeline.ports import Runtime
from .pipeline.running import running_in

if TYPE_CHECKING:
    from .registry import Registry
    from .store.base import Store

log = logging.getLogger("daggerflow")


class Versions:
    _registry: Registry
    _runtime: Callable[[], Runtime]

    def local_versions(self) -> list[TemplateVersion]:
        """The versions this process sees (every one, embedded; on Kafka its registered
        versions and those of the instances in the partitions it holds)."""
        runtime = self._runtime()
        registry = self._registry
        found: dict[tuple[str, str], TemplateVersion] = {}
        stored = runtime.stored_versions()
        for template, version, data, _ in stored:
            found[(template, version)] = TemplateVersion(
                template=template, version=version, definition=decode_definition(data)
            )
        for registered in registry.templates.values():
            definition = describe_spec(registered.spec)
            key = (definition.template, definition.version)
            found[key] = TemplateVersion(template=key[0], version=key[1], current=True, definition=definition)
        types, topics = registry.task_types.keys(), registry.listeners.keys()
        missing: dict[tuple[str, str], tuple[set[str], set[str]]] = {}
        for instance in list(runtime.running_instances()):
            key = (instance.template_name, instance.template_version)
            entry = found.get(key)
            if entry is None:
                entry = found[key] = TemplateVersion(
                    template=key[0], version=key[1], definition=describe_instance(instance)
                )
            entry.running += 1
            lacks_types, lacks_topics = missing_in(instance, types, topics)
            known_types, known_topics = missing.setdefault(key, (set(), set()))
            known_types |= lacks_types
            known_topics |= lacks_topics
        for key, (lacks_types, lacks_topics) in missing.items():
            found[key].missing_task_types = sorted(lacks_types)
            found[key].missing_topics = sorted(lacks_topics)
        kept = {(t, v) for t, v, _, _ in stored}
        for key, entry in found.items():
            # A version seen once stays listed after its last instance ends (embedded: for
            # good, in the store; Kafka: while this worker runs).
            if key not in kept and entry.definition is not None:
                runtime.remember_version(key[0], key[1], encode_definition(entry.definition))
        return merge_versions([found.values()])

    async def template_versions(self) -> list[TemplateVersion]:
        """Every version of every template with its count of running instances, across every
        worker on Kafka (those that do not answer are left out, with a warning)."""
        runtime = self._runtime()
        local = self.local_versions()
        others = [decode_versions(data) for data in await runtime.versions_elsewhere()]
        return merge_versions([local, *others])

    def remember_registered_versions(self) -> None:
        """Keep the definitions of the versions this worker registers (at start)."""
        runtime = self._runtime()
        kept = {(t, v) for t, v, _, _ in runtime.stored_versions()}
        for registered in self._registry.templates.values():
            definition = describe_spec(registered.spec)
            if (definition.template, definition.version) not in kept:
                runtime.remember_version(definition.template, definition.version, encode_definition(definition))

    def check_store(self, store: Store) -> list[TemplateVersion]:
        """The start-up check of a store a partition task starts over (embedded: at start;
        Kafka: each partition this worker activates): warn, once per version, about what its
        running instances need that this worker does not register (once per version in this
        process). Returns those versions. Costs one read of the store's running instances."""
        registry = self._registry
        types, topics = registry.task_types.keys(), registry.listeners.keys()
        lacking: dict[tuple[str, str], TemplateVersion] = {}
        for instance in list(running_in([store])):
            lacks_types, lacks_topics = missing_in(instance, types, topics)
            if not (lacks_types or lacks_topics):
                continue
            key = (instance.template_name, instance.template_version)
            v = lacking.setdefault(key, TemplateVersion(template=key[0], version=key[1]))
            v.running += 1
            v.missing_task_types = sorted({*v.missing_task_types, *lacks_types})
            v.missing_topics = sorted({*v.missing_topics, *lacks_topics})
        warned: set[tuple[str, str]] = self.__dict__.setdefault("_versions_warned", set())
        for key, v in lacking.items():
            if key in warned:
                continue  # (another partition of this worker held instances of it)
            warned.add(key)
            needs = []
            if v.missing_task_types:
                needs.append(f"task types {', '.join(v.missing_task_types)}")
            if v.missing_topics:
                needs.append(f"listener topics {', '.join(v.missing_topics)}")
            log.warning(
                "template %s version %s: %d running instance(s) in %s need %s, which this worker does "
                "not register: those tasks fail naming the missing type (listeners on a missing topic "
                "wait); deploy the code that defines them and retry, or migrate the instances to "
                "version %s",
                v.template, v.version, v.running, store.path, " and ".join(needs), self._current_version(v.template),
            )  # fmt: skip
        return list(lacking.values())

    def _registered_version(self, template: str) -> str | None:
        registered = self._registry.templates.get(template)
        return None if registered is None else registered.spec.version()

    def _current_version(self, template: str) -> str:
        registered = self._registry.templates.get(template)
        return "(none registered)" if registered is None else registered.spec.version()
