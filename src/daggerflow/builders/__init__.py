"""Fluent builders and ``DAGBuilderHelper``, with Dagger's names.

Builders produce immutable template objects (``model.template``): ``tasks`` builds tasks,
``processes`` chains them into processes and templates, ``helper`` is Dagger's
``DAGBuilderHelper``. Everything is importable from here, as from Dagger's one module.
"""

from ..tasks import ExecutorTask, kind_of, type_name_of
from .helper import DAGBuilderHelper
from .processes import (
    DefaultTemplateBuilder,
    DynamicProcessTemplateDagBuilder,
    IProcessTemplateDAGBuilder,
    ParallelCompositeProcessTemplateDagBuilder,
    ProcessTemplateDagBuilder,
)
from .tasks import (
    BuilderHost,
    DecisionTaskTemplateBuilder,
    DefaultTaskTemplateBuilder,
    IntervalTaskTemplateBuilder,
    KafkaCommandTaskTemplateBuilder,
    KafkaListenerTaskTemplateBuilder,
    ParallelCompositeTaskTemplateBuilder,
    SensorTaskTemplateBuilder,
    TaskTemplateBuilder,
    TriggerTaskTemplateBuilder,
)

__all__ = [
    "BuilderHost",
    "DAGBuilderHelper",
    "DecisionTaskTemplateBuilder",
    "DefaultTaskTemplateBuilder",
    "DefaultTemplateBuilder",
    "DynamicProcessTemplateDagBuilder",
    "ExecutorTask",
    "IProcessTemplateDAGBuilder",
    "IntervalTaskTemplateBuilder",
    "KafkaCommandTaskTemplateBuilder",
    "KafkaListenerTaskTemplateBuilder",
    "ParallelCompositeProcessTemplateDagBuilder",
    "ParallelCompositeTaskTemplateBuilder",
    "ProcessTemplateDagBuilder",
    "SensorTaskTemplateBuilder",
    "TaskTemplateBuilder",
    "TriggerTaskTemplateBuilder",
    "kind_of",
    "type_name_of",
]

