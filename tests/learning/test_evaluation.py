import pytest
import torch

from app.learning.evaluation import accuracy_matrix_metrics, evaluate_logits


def test_metrics_follow_their_definitions():
    matrix = [[0.9, None, None], [0.7, 0.8, None], [0.6, 0.85, 0.95]]
    metrics = accuracy_matrix_metrics(matrix)
    assert metrics["average_accuracy"] == pytest.approx((0.6 + 0.85 + 0.95) / 3)
    assert metrics["bwt"] == pytest.approx(((0.6 - 0.9) + (0.85 - 0.8)) / 2)
    # forgetting: best earlier minus current; task 1 peaked at 0.8 and is now 0.85 -> -0.05
    assert metrics["forgetting_per_task"] == pytest.approx([0.3, -0.05])


def test_single_task_has_no_transfer():
    assert accuracy_matrix_metrics([[0.5]])["bwt"] is None


def test_evaluate_logits_counts_correct_predictions():
    logits = torch.tensor([[2.0, 0.0], [0.0, 2.0], [2.0, 0.0]])
    result = evaluate_logits(
        lambda x: logits[x.long().flatten()], torch.arange(3.0).view(3, 1), torch.tensor([0, 1, 1]), batch_size=2
    )
    assert result.accuracy == pytest.approx(2 / 3) and result.n == 3
