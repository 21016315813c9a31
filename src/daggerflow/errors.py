"""Exceptions, with Dagger's names.

DaggerError
 ├── InvalidTaskType            a builder was given a task class of the wrong kind
 ├── TaskInvalidState           an operation that the instance's state forbids
 ├── TemplateDoesNotExist       no template is registered under that name
 ├── InvalidTriggerTimeForTask  a trigger/interval time parameter is missing or not a number
 ├── ConfigurationError         an engine option or store URL that is not supported
 ├── NotSerializable            a runtime parameter or message that is not JSON-serialisable
 ├── StoreError                 the database is corrupt, foreign or from a newer version
 └── PartitionMoved             (Kafka) the partition of an instance moved to another worker
                                while a call waited on it; the call may be sent again
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


class InvalidTriggerTimeForTask(DaggerError):
    pass


class ConfigurationError(DaggerError):
    pass


class NotSerializable(DaggerError, TypeError):
    pass


class StoreError(DaggerError):
    pass


class PartitionMoved(DaggerError):
    pass
