"""`compact compress MODEL --data FILE --speedup 3 --max-drop 1 OUT`: say the goal, get the model.

The planner combines what the technique registry offers (compact_nlp.registry.PlanOption) with the student's depth,
predicts each plan's latency and size on this machine, tries the plans predicted to meet the goal on a held-out
split carved from the training data, escalates while the drop is too large, and ships the first that holds (or says
how far the best one is). compact_nlp.compress.job describes the phases.
"""

from .api import compress
from .goal import Goal, GoalError, Limits
from .report import EXIT_UNMET, CompressResult

__all__ = ["EXIT_UNMET", "CompressResult", "Goal", "GoalError", "Limits", "compress"]
