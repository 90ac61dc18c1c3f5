"""Fine-tuning: train on the new task alone, with nothing pulling the weights back (the baseline that forgets).

It belongs to the EWC family, whose network and state it shares: the task is consolidated
all the same (Fisher + anchor), so a later EWC update of the same model can protect it.
"""

from __future__ import annotations

from app.learning.strategies.base import Learner, register
from app.learning.strategies.ewc import EWC


@register
class Finetune(EWC):
    """EWC's update without the penalty: λ plays no part and is not recorded."""

    name = "finetune"
    uses_lambda = False

    def resolve_lambda(self, learner: Learner, requested: float | str | None) -> float | str:
        return 0.0
