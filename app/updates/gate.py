"""The forgetting gate: whether an update may replace the serving version.

An update is always stored (its version row and artifacts), but it is promoted to serve only
when no earlier task's *validation* accuracy fell by more than the model's ``max_forgetting``;
otherwise the job ends ``rejected`` with the numbers, and a user can still promote it.
"""

from __future__ import annotations

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

    @property
    def passed(self) -> bool:
        return not self.tripped_by

    def reason(self, version_number: int, task_id: int) -> str:
        falls = "; ".join(
            f"task {key}: {self.before[key]:.3f} -> {self.after[key]:.3f} (-{self.drops[key]:.3f})"
            for key in self.tripped_by
        )
        return (
            f"forgetting gate: validation accuracy of earlier tasks dropped by more than max_forgetting "
            f"{self.max_forgetting:.3f} ({falls}); stored as version {version_number}, not promoted; "
            f"POST /tasks/{task_id}/promote accepts it anyway"
        )

    def as_dict(self) -> dict:
        return {**asdict(self), "passed": self.passed}


def forgetting_gate(result: UpdateResult, max_forgetting: float) -> GateDecision:
    """Trips when any earlier task's validation accuracy fell by more than ``max_forgetting``."""
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
    )
