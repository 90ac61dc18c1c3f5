"""GET /metrics: HTTP and prediction figures of the API process, and queue, update and learning
figures that the real worker wrote to the database (SQLite and Postgres), parsed as Prometheus would."""

from datetime import timedelta

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from app.db.tables import Job, utcnow
from app.jobs import queue


def scrape(client) -> dict[tuple, float]:
    """Every sample: {(name, sorted label pairs): value}."""
    response = client.get("/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def value(samples: dict, name: str, **labels) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


def test_metrics_follow_requests_predictions_updates_and_rollback(
    client, settings, pmnist_files, teach, run_worker_once
):
    for path in pmnist_files:
        assert teach(path).status_code == 202
    assert run_worker_once() == 1 and run_worker_once() == 1
    before = scrape(client)
    inputs = np.load(pmnist_files[0])["x_test"][:5].tolist()
    for _ in range(2):
        assert client.post("/predict", json={"model": "m", "inputs": inputs}).status_code == 200
    matrix = client.get("/models/m/accuracy").json()
    assert client.get("/models/nope/accuracy").status_code == 404
    assert client.get("/no/such/path").status_code == 404
    after = scrape(client)

    # HTTP: route templates, never raw paths
    def requests(route, status, s=after):
        return value(s, "retain_http_requests_total", method="GET", route=route, status=status)

    assert requests("/models/{name}/accuracy", "200") >= 1 and requests("/models/{name}/accuracy", "404") >= 1
    assert requests("unmatched", "404") >= 1
    assert not any(dict(labels).get("route", "").startswith("/models/m") for _, labels in after)
    assert (
        value(after, "retain_http_request_duration_seconds_count", method="POST", route="/predict", status="200") >= 2
    )

    # prediction: deltas, the counters are per process
    def delta(name, **labels):
        return (value(after, name, **labels) or 0) - (value(before, name, **labels) or 0)

    assert delta("retain_predict_inference_seconds_count", model="m") == 2
    assert delta("retain_predict_batch_size_sum", model="m") == 10
    assert delta("retain_predict_queue_seconds_count", model="m") == 2
    assert (
        delta("retain_predict_learner_cache_misses_total") == 1
        and delta("retain_predict_learner_cache_hits_total") == 1
    )
    assert delta("retain_predict_learner_load_seconds_count") == 1

    # queue and updates, from the rows the worker wrote
    assert value(after, "retain_jobs", model="m", status="succeeded") == 2
    assert value(after, "retain_jobs", model="m", status="queued") == 0
    assert value(after, "retain_queue_oldest_job_age_seconds", model="m") == 0
    assert value(after, "retain_update_duration_seconds_count", outcome="succeeded") == 2
    for phase in ("load", "train", "fisher", "evaluate", "store"):
        assert value(after, "retain_update_phase_seconds_count", phase=phase, outcome="succeeded") == 2, phase
    phase_total = sum(v for (name, labels), v in after.items() if name == "retain_update_phase_seconds_sum")
    assert 0 < phase_total <= value(after, "retain_update_duration_seconds_sum", outcome="succeeded") + 0.5
    beats = [v for (name, _), v in after.items() if name == "retain_worker_last_heartbeat_timestamp_seconds"]
    assert len(beats) == 1 and abs(beats[0] - utcnow().timestamp()) < 300
    assert value(after, "retain_forgetting_gate_rejections_total", model="m") == 0

    # learning: the serving version's figures are the accuracy matrix's
    assert value(after, "retain_model_serving_version", model="m") == 2
    assert value(after, "retain_model_average_accuracy", model="m") == pytest.approx(matrix["average_accuracy"])
    assert value(after, "retain_model_backward_transfer", model="m") == pytest.approx(matrix["bwt"])
    assert value(after, "retain_model_max_forgetting", model="m") == pytest.approx(matrix["forgetting"])
    first, second = (task["task_id"] for task in matrix["tasks"])
    assert value(after, "retain_model_task_accuracy", model="m", task=str(first)) == pytest.approx(
        matrix["matrix"][1][0]
    )

    assert client.put("/models/m/serving-version", json={"version": 1}).status_code == 200
    rolled_back = scrape(client)
    assert value(rolled_back, "retain_model_serving_version", model="m") == 1
    assert value(rolled_back, "retain_model_average_accuracy", model="m") == pytest.approx(matrix["matrix"][0][0])
    assert value(rolled_back, "retain_model_backward_transfer", model="m") is None  # one task learnt up to v1
    assert value(rolled_back, "retain_model_task_accuracy", model="m", task=str(second)) is None


def test_lease_expiries_and_requeues_are_counted_across_attempts(client, session_factory, make_job):
    retried, last_try = make_job("q"), make_job("q", max_attempts=1)
    with session_factory() as session:
        held = queue.claim(session, "w1", lease_seconds=30)
        assert held.job_id == retried
        queue.heartbeat(session, held, 30, {"phase": "train", "fraction": 0.5})
        assert queue.reap(session, now=utcnow() + timedelta(minutes=1)) == {retried: "queued"}
        again = queue.claim(session, "w2", lease_seconds=30)
        queue.heartbeat(session, again, 30, {"phase": "train", "fraction": 0.1})  # a new attempt's progress
        assert queue.release(session, again, "worker shut down; requeued")
        assert session.get(Job, retried).progress == {"fraction": 0.0, "lease_expiries": 1, "requeues": 2}
    samples = scrape(client)
    assert value(samples, "retain_job_lease_expiries_total", model="q") == 1
    assert value(samples, "retain_job_requeues_total", model="q") == 2
    assert value(samples, "retain_jobs", model="q", status="queued") == 2
    assert value(samples, "retain_queue_oldest_job_age_seconds", model="q") >= 0

    with session_factory() as session:  # the second job's only lease expires: failed, one expiry, no requeue
        session.get(Job, retried).status = "cancelled"
        session.commit()
        held = queue.claim(session, "w1", lease_seconds=30)
        assert held.job_id == last_try
        assert queue.reap(session, now=utcnow() + timedelta(minutes=1)) == {last_try: "failed"}
    samples = scrape(client)
    assert value(samples, "retain_job_lease_expiries_total", model="q") == 2
    assert value(samples, "retain_job_requeues_total", model="q") == 2
    assert value(samples, "retain_jobs", model="q", status="failed") == 1
    workers = {
        dict(labels)["worker"] for name, labels in samples if name == "retain_worker_last_heartbeat_timestamp_seconds"
    }
    assert workers == {"w1"}  # a requeued job forgets its lease owner (w2's try); w1 ran the failed one
