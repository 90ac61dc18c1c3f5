"""A worker's memory budget for one update: refuse with the reason, rather than be killed by the kernel.

Before training, the update's peak is estimated from the learner it loaded: the network
(parameters and buffers) once, plus one copy per λ candidate the search may train; for the
trainable parameters their gradients, the optimizer's momentum, and the new task's Fisher and
anchor; the consolidation (Fisher and anchors of every learnt task) and the rehearsal memory.
Activations are not counted (they depend on the batch size and the architecture): the budget
should leave room for them.
"""

from __future__ import annotations

from app.learning import ContinualLearner


def update_bytes(learner: ContinualLearner) -> int:
    """The estimate of the module docstring; 0 while the learner has no network (a model's first task)."""
    network = learner.network
    if network is None:
        return 0
    whole = sum(t.numel() * t.element_size() for t in [*network.parameters(), *network.buffers()])
    trainable = sum(p.numel() * p.element_size() for p in network.parameters() if p.requires_grad)
    consolidation = learner.consolidation.nbytes() if learner.consolidation is not None else 0
    memory = 0
    if learner.memory is not None:
        memory = sum(t.numel() * t.element_size() for t in learner.memory.tensors().values())
    copies = 1 + len(learner.ewc.lambda_candidates)
    return whole * copies + 4 * trainable + consolidation + memory


def check_update_budget(learner: ContinualLearner, budget: int | None) -> None:
    """ValueError (the job fails with this reason) when the estimate is over ``budget`` bytes."""
    needed = update_bytes(learner)
    if budget is not None and needed > budget:
        raise ValueError(
            f"this update needs about {needed / 2**30:.2f} GiB (the network and its λ-search copies, gradients, "
            f"optimizer state, Fisher and anchors, the replay memory), over this worker's budget of "
            f"{budget / 2**30:.2f} GiB (max_update_bytes): train fewer parameters (trainable head, last:N or lora) "
            "or raise the budget"
        )
