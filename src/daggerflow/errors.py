"""Exceptions, with Dagger's names.

DaggerError
 ├── InvalidTaskType            a builder was given a task class of the wrong kind
 ├── TaskInvalidState           an operation that the instance's state forbids
 ├── TemplateDoesNotExist       no template is registered under that name
 ├── InvalidTriggerTimeForTask  a trigger/interval time parameter is missing or not a number
 ├── ConfigurationError         an engine option or store URL that is not supported
 ├── NotSerializable            a runtime parameter or message that is not JSON-serialisable
 ├── InvalidInput               a request the engine refuses as given (HTTP 422)
 │    ├── InvalidInstanceId     an instance id that cannot be addressed (empty, too long, ...)
 │    └── InvalidFilter         an unknown, repeated or malformed instance filter: listings,
 │                              bulk actions, migrations (HTTP 400)
 ├── InvalidSchedule            a schedule definition that cannot run: its cron expression,
 │                              interval, time zone, catch-up mode or name (HTTP 400)
 ├── UnknownSchedule            no schedule by that name (HTTP 404)
 ├── UnknownMessage             no message at that topic and offset, or a topic this worker
 │                              does not read (HTTP 404)
 ├── TooLarge                   a body, message, parameters or instance over its size limit (413)
 ├── StoreError                 the database is corrupt, foreign or from a newer version
 │    ├── StateCorrupted        a partition's local store cannot be opened or read: wipe it
 │    │                         and restore it from the changelog (Kafka)
 │    └── ChangelogError        a changelog record this version cannot read
 ├── PartitionMoved             (Kafka) the partition of an instance moved to another worker
 │                              while a call waited on it; the call may be sent again
 ├── NotOwner                   (Kafka) this worker does not hold the instance's partition now
 ├── TaskMigrated               (Kafka) a partition task was fenced: close it and rejoin
 └── ForwardError               (Kafka) a read forwarded to the owning worker failed
"""

from __future__ import annotations


class DaggerError(Exception):
    pass


class InvalidTaskType(DaggerError):
    pass


class TaskInvalidState(DaggerError):
    pass


class TemplateDoesNotExist(DaggerError):
    pass


class UnknownInstance(DaggerError, LookupError):
    """No such workflow instance, or no such node in it (HTTP 404)."""


class UnknownJob(UnknownInstance):
    """No bulk job has that id (HTTP 404)."""


class InvalidTriggerTimeForTask(DaggerError):
    pass


class ConfigurationError(DaggerError):
    pass


class NotSerializable(DaggerError, TypeError):
    pass


class InvalidInput(DaggerError, ValueError):
    """A request the engine refuses as given: a reserved or mistyped argument, a value that
    cannot be stored. The message names the argument and what would be accepted."""


class InvalidInstanceId(InvalidInput):
    """An instance id that could not be addressed afterwards (empty, too long, characters
    outside the documented set)."""


class InvalidFilter(InvalidInput):
    """An instance filter that is unknown, given twice or malformed, wherever filters are
    taken (the listings, bulk actions, migrations); ``filter`` names it (None: the filter
    as a whole, e.g. not an object)."""

    def __init__(self, message: str, filter: str | None = None) -> None:
        super().__init__(message)
        self.filter = filter


class InvalidSchedule(DaggerError, ValueError):
    """A schedule definition that cannot run (a cron expression, interval, time zone,
    catch-up mode, name or template that is refused). The message names the field."""


class UnknownSchedule(DaggerError, LookupError):
    """No schedule by that name (HTTP 404)."""


class UnknownMessage(DaggerError, LookupError):
    """No message at that topic, partition and offset (not written yet, or removed by
    retention), or a topic the worker does not read (HTTP 404)."""


class TooLarge(DaggerError, ValueError):
    """A request body, message value, runtime parameters or a whole instance record over its
    configured size limit. ``limit`` and ``size`` are in bytes."""

    def __init__(self, what: str, size: int, limit: int, hint: str = "") -> None:
        super().__init__(f"{what} is {size} bytes, over the limit of {limit} bytes{hint}")
        self.what = what
        self.size = size
        self.limit = limit


class StoreError(DaggerError):
    pass


class PartitionMoved(DaggerError):
    pass


class StateCorrupted(StoreError):
    """A partition's local store (or its checkpoint) cannot be opened or read. On Kafka the
    changelog, not the file, is the source of truth: the file is wiped and restored."""


class ChangelogError(StoreError):
    """A changelog record this version cannot read (unknown tag, newer format, garbage)."""


class NotOwner(DaggerError):
    """Raised by a process asked for an instance of a partition it does not own (any more).

    The internal REST route answers it with 421 Misdirected Request, which the forwarding side
    tells apart from "this instance does not exist" (404): the owner moved, ask the new one.
    """


class TaskMigrated(DaggerError):
    """The task of ``partition`` was fenced: another producer with its transactional id started
    (a new owner), or the broker aborted its transaction for exceeding the transaction timeout.

    Its open transaction is aborted and its producer is unusable. Close the task as a zombie: drop
    its uncommitted state, acknowledge nothing of the batch, and rejoin (re-activate).
    """

    def __init__(self, partition: int, transactional_id: str, reason: str) -> None:
        super().__init__(
            f"task {partition} ({transactional_id}) migrated: {reason}; close it as a zombie and rejoin"
        )
        self.partition = partition
        self.transactional_id = transactional_id


class ForwardError(DaggerError):
    """A forwarded read failed: the owner did not answer, or answered with an error.

    ``status`` is the HTTP status, or None when there was no answer (connection refused,
    timeout); 421 means the worker no longer owns the partition.
    """

    def __init__(self, url: str, message: str, status: int | None = None) -> None:
        super().__init__(f"forwarding to {url}: {message}")
        self.url = url
        self.status = status
