"""Pure transitions: ``apply(instance, event, context) -> Transition``. No I/O here."""

from .effects import (
    CancelJob,
    CancelTimer,
    Effect,
    IndexDel,
    IndexPut,
    InstanceDeleted,
    RunJob,
    SetTimer,
)
from .events import Create, Deliver, Event, JobDone, JobFailed, Stop, Submit, TimerFired
from .transitions import Context, Transition, apply, desired_correlations

__all__ = [
    "CancelJob",
    "CancelTimer",
    "Context",
    "Create",
    "Deliver",
    "Effect",
    "Event",
    "IndexDel",
    "IndexPut",
    "InstanceDeleted",
    "JobDone",
    "JobFailed",
    "RunJob",
    "SetTimer",
    "Stop",
    "Submit",
    "TimerFired",
    "Transition",
    "apply",
    "desired_correlations",
]
