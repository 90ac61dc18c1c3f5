"""Continual learning in pure PyTorch: models, Fisher, EWC, strategies, training, evaluation.

No web framework and no database here: the service calls this package, and it works on
its own as a library (see docs/architecture.md, "The learning library's API").
"""

from app.learning.config import EWCConfig, FisherConfig, TrainConfig
from app.learning.data import TaskData, as_samples
from app.learning.evaluation import Evaluation, accuracy_matrix_metrics
from app.learning.learner import ContinualLearner, Prediction, UpdateResult
from app.learning.models import ARCHITECTURES
from app.learning.preprocessing import InputScaling
from app.learning.strategies import Strategy, register, strategy_class, strategy_names
from app.learning.training import Progress, TrainingDiverged, TrainingStopped

__all__ = [
    "ContinualLearner",
    "TaskData",
    "TrainConfig",
    "FisherConfig",
    "EWCConfig",
    "UpdateResult",
    "Progress",
    "TrainingStopped",
    "TrainingDiverged",
    "InputScaling",
    "Prediction",
    "Evaluation",
    "accuracy_matrix_metrics",
    "as_samples",
    "ARCHITECTURES",
    "Strategy",
    "register",
    "strategy_class",
    "strategy_names",
]
