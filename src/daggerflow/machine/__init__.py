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
from .events import (
    Complete,
    Create,
    Deliver,
    Event,
    JobDone,
    JobFailed,
    Migrate,
    PatchParameters,
    Repair,
    Retry,
    Skip,
    Stop,
    Submit,
    TimerFired,
)
from .repair import apply
from .transitions import Context, Transition, desired_correlations

__all__ = [
    "CancelJob",
    "CancelTimer",
    "Complete",
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
    "Migrate",
    "PatchParameters",
    "Repair",
    "Retry",
    "RunJob",
    "SetTimer",
    "Skip",
    "Stop",
    "Submit",
    "TimerFired",
    "Transition",
    "apply",
    "desired_correlations",
]
