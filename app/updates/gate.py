"""The gate: whether an update may replace the serving version.

An update is always stored (its version row and artifacts), but it is promoted to serve only
when (1) no earlier task's *validation* accuracy fell by more than the model's ``max_forgetting``
(the forgetting gate), and (2) the new task itself was learnt: its validation accuracy is
better than always answering its most frequent label (``learning_check``, the first task of a
model included). Otherwise the job ends ``rejected`` with the numbers and what to try, and a
user can still promote it.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

from app.learning import UpdateResult


@dataclass
class GateDecision:
    """The forgetting gate's verdict, from validation accuracy before and after the update."""

    max_forgetting: float
    before: dict[str, float]
    after: dict[str, float]
    drops: dict[str, float] = field(default_factory=dict)
    tripped_by: list[str] = field(default_factory=list)
    # Not part of the verdict, recorded with it: the update's own warning that old tasks lost
    # validation accuracy whatever λ the search tried (the model may be too small for its tasks).
    capacity_warning: str | None = None
    # The new task's own check (``learning_check``): None when it was learnt (or could not be judged).
    not_learnt: dict | None = None

    @property
    def passed(self) -> bool:
        return not self.tripped_by and self.not_learnt is None

    def reason(self, version_number: int, task_id: int) -> str:
        stored = f"stored as version {version_number}, not promoted; POST /tasks/{task_id}/promote accepts it anyway"
        if self.not_learnt is not None:
            return f"{self.not_learnt['reason']}; {stored}"
        falls = "; ".join(
            f"task {key}: {self.before[key]:.3f} -> {self.after[key]:.3f} (-{self.drops[key]:.3f})"
            for key in self.tripped_by
        )
        return (
            f"forgetting gate: validation accuracy of earlier tasks dropped by more than max_forgetting "
            f"{self.max_forgetting:.3f} ({falls}); {stored}"
        )

    def as_dict(self) -> dict:
        return {**asdict(self), "passed": self.passed}


def forgetting_gate(result: UpdateResult, max_forgetting: float, not_learnt: dict | None = None) -> GateDecision:
    """Trips when any earlier task's validation accuracy fell by more than ``max_forgetting``, or when
    ``not_learnt`` (``learning_check``'s verdict on the new task) says the task was not learnt."""
    before = dict(result.validation_before)
    after = dict(result.validation_after)
    drops = {key: before[key] - after[key] for key in before if key in after}
    tripped = [key for key, drop in drops.items() if drop > max_forgetting]
    return GateDecision(
        max_forgetting=max_forgetting,
        before=before,
        after=after,
        drops=drops,
        tripped_by=tripped,
        capacity_warning=result.capacity_warning,
        not_learnt=not_learnt,
    )


CONFIDENCE_Z = 1.645  # one-sided 95%


def wilson_lower_bound(correct: int, n: int, z: float = CONFIDENCE_Z) -> float:
    """The Wilson score interval's lower end for a binomial proportion (Wilson 1927): the least accuracy
    ``correct`` of ``n`` right answers are evidence of, at one-sided confidence z (1.645: 95%)."""
    if n == 0:
        return 0.0
    p = correct / n
    centre = p + z * z / (2 * n)
    spread = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return (centre - spread) / (1 + z * z / n)


def learning_check(
    task_key: str,
    accuracy: float | None,
    validation_labels: Sequence,
    train_labels: Sequence,
    train_config: dict | None = None,
) -> dict | None:
    """Whether the new task was learnt: None when it was, else the numbers and a reason to act on.

    Not learnt: the Wilson lower bound (one-sided 95%) of its validation accuracy is no higher than the
    share of its most frequent validation label, the accuracy of always answering that label. The
    bound is the margin a small validation set needs: 6 of 6 right on a balanced two-label task pass
    (bound 0.69 > 0.5), 5 of 6 do not (0.50); on 100 samples, 0.59 beats a 0.5 baseline. A task with
    one label, or without validation samples, cannot be judged (None)."""
    n = len(validation_labels)
    counts = Counter(validation_labels)
    if accuracy is None or n == 0 or len(counts) < 2:
        return None
    majority_label, majority_count = counts.most_common(1)[0]
    share = majority_count / n
    bound = wilson_lower_bound(round(accuracy * n), n)
    if bound > share:
        return None
    per_class = Counter(train_labels)
    fewest_label, fewest = min(per_class.items(), key=lambda item: item[1])
    config = train_config or {}
    hints = [
        "the features' scale (keep the option standardize on, or scale them to about unit range)",
        f"the learning rate (lr {config['lr']:g}: try a tenth of it)" if "lr" in config else "the learning rate (lr)",
        f"too few epochs ({config['epochs_trained']} trained)" if "epochs_trained" in config else "too few epochs",
        f"too few samples per class (fewest: {fewest} of label {fewest_label!r})",
    ]
    reason = (
        f"task {task_key} was not learnt: its validation accuracy {accuracy:.3f} is no better than always "
        f"answering its most frequent label {majority_label!r} ({share:.3f} of {n} validation samples; the "
        f"accuracy's Wilson 95% lower bound is {bound:.3f}); it may be " + ", ".join(hints[:-1]) + f", or {hints[-1]}"
    )
    return {
        "task": task_key,
        "accuracy": accuracy,
        "n_validation": n,
        "majority_label": majority_label,
        "majority_share": share,
        "accuracy_lower_bound": bound,
        "fewest_per_class": fewest,
        "reason": reason,
    }
