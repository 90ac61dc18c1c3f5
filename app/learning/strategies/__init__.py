"""Continual-learning strategies, one class per method behind one interface (``base.Strategy``).

Importing this package registers the library's strategies, in this order: ``ewc``,
``finetune``, ``replay``, ``ewc_replay`` and ``auto`` (the EWC family) and ``ccll`` (its own
family). Look one up by name with ``strategy_class``; add one with ``@register``.
"""

from app.learning.strategies.base import (
    Strategy,
    family_names,
    family_strategy,
    options_of_other_families,
    register,
    strategy_class,
    strategy_names,
)

# Importing registers: this order is the one strategy_names() lists.
# isort: off
from app.learning.strategies.ewc import EWC
from app.learning.strategies.finetune import Finetune
from app.learning.strategies.replay import EWCReplay, Replay
from app.learning.strategies.auto import Auto
from app.learning.strategies.ccll import CCLL
# isort: on

__all__ = [
    "Strategy",
    "EWC",
    "Finetune",
    "Replay",
    "EWCReplay",
    "Auto",
    "CCLL",
    "register",
    "strategy_class",
    "strategy_names",
    "family_names",
    "family_strategy",
    "options_of_other_families",
]
