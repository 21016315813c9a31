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

if TYPE_CHECKING:
    from .registry import Registry

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
        for template, version, data, _ in runtime.stored_versions():
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
        return merge_versions([found.values()])

    async def template_versions(self) -> list[TemplateVersion]:
        """Every version of every template with its count of running instances, across every
        worker on Kafka (those that do not answer are left out, with a warning)."""
        runtime = self._runtime()
        local = self.local_versions()
        others = [decode_versions(data) for data in await runtime.versions_elsewhere()]
        return merge_versions([local, *others])

    def check_versions(self) -> list[TemplateVersion]:
        """The start-up check: keep the definitions of the versions registered and of those
        running here, and warn, once per version, about what its running instances need that
        this worker does not register. Returns the versions that lack something."""
        runtime = self._runtime()
        versions = self.local_versions()
        kept = {(t, v) for t, v, _, _ in runtime.stored_versions()}
        lacking: list[TemplateVersion] = []
        for v in versions:
            if (v.template, v.version) not in kept and v.definition is not None:
                runtime.remember_version(v.template, v.version, encode_definition(v.definition))
            if v.running and (v.missing_task_types or v.missing_topics):
                lacking.append(v)
                needs = []
                if v.missing_task_types:
                    needs.append(f"task types {', '.join(v.missing_task_types)}")
                if v.missing_topics:
                    needs.append(f"listener topics {', '.join(v.missing_topics)}")
                log.warning(
                    "template %s version %s: %d running instance(s) need %s, which this worker does "
                    "not register: those tasks fail naming the missing type (listeners on a missing "
                    "topic wait); deploy the code that defines them and retry, or migrate the "
                    "instances to version %s",
                    v.template, v.version, v.running, " and ".join(needs), self._current_version(v.template),
                )  # fmt: skip
        return lacking

    def _current_version(self, template: str) -> str:
        registered = self._registry.templates.get(template)
        return "(none registered)" if registered is None else registered.spec.version()
