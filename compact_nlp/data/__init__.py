"""Task data from anywhere: files, datasets objects, hub ids, GLUE by name, all as one typed `TaskData`."""

from .load import (as_spec, carve_validation, glue_spec, glue_task_data, load_task_data,
                   task_data_from_options)
from .task import (METRICS, MULTI_LABEL, PROBLEM_TYPES, REGRESSION, SINGLE_LABEL, DataError, TaskData, TaskSpec,
                   task_texts)

__all__ = ["DataError", "METRICS", "MULTI_LABEL", "PROBLEM_TYPES", "REGRESSION", "SINGLE_LABEL", "TaskData",
           "TaskSpec", "as_spec", "carve_validation", "glue_spec", "glue_task_data", "load_task_data",
           "task_data_from_options", "task_texts"]
