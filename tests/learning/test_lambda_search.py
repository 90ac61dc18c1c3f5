import pytest

from app.learning.lambda_search import search_cost, successive_halving


def test_successive_halving_picks_the_best_candidate_and_trains_it_fully():
    # A constructed case: each candidate's validation accuracy peaks at lambda = 100.
    def start(value):
        return {"value": value, "steps": 0}

    def advance(candidate, n):
        candidate["steps"] += n

    def score(candidate):
        quality = 1.0 - abs(candidate["value"] - 100) / 1000
        return {"old": quality * min(1.0, candidate["steps"] / 40), "new": quality}

    winner, entries = successive_halving([1, 10, 100, 1000], start, advance, score, total_steps=40)
    assert winner.value == 100
    assert winner.state["steps"] == 40
    assert sorted(e.value for e in entries) == [1, 10, 100, 1000]
    assert all(e.score is not None for e in entries)


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 6])
def test_search_costs_at_most_three_plain_updates(n):
    assert search_cost(n) <= 3.0
