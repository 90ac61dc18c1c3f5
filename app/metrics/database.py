"""Queue, update and learning figures read from the database at every scrape.

Workers are other processes (often other machines), so what they did is taken from the rows
they wrote, not from per-process counters: the jobs table (status, timestamps, heartbeats, and
the ``progress`` JSON's ``phase_seconds``, ``lease_expiries`` and ``requeues``, see
app/jobs/counters.py and app/metrics/phases.py) and the registry (serving version, accuracy
rows). Counters and histograms are sums over the rows, so they only grow while rows are kept.
A scrape reads every job's progress once: fine for the queues this service keeps (thousands of
jobs), to be aggregated in SQL if it ever holds millions.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from datetime import timedelta

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from app.db.tables import Accuracy, FeedbackPolicy, Job, Model, ModelVersion, utcnow
from app.feedback.service import buffered_labels, live_accuracy
from app.jobs.status import JobStatus
from app.learning.evaluation import accuracy_matrix_metrics

log = logging.getLogger(__name__)

OUTCOMES = ("succeeded", "rejected", "failed", "cancelled")
UPDATE_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)
HEARTBEAT_HORIZON = timedelta(days=1)  # workers unseen for longer drop out of the heartbeat gauge


def histogram(
    name: str, documentation: str, labels: list[str], observations: dict[tuple, list[float]]
) -> HistogramMetricFamily:
    family = HistogramMetricFamily(name, documentation, labels=labels)
    for label_values, values in sorted(observations.items()):
        buckets = [(repr(bound), float(sum(value <= bound for value in values))) for bound in UPDATE_BUCKETS]
        family.add_metric(list(label_values), buckets + [("+Inf", float(len(values)))], sum_value=sum(values))
    return family


def worker_of(lease_owner: str) -> str:
    """Leases are ``<worker id>/<token per claim>`` (app/jobs/queue.py)."""
    return lease_owner.rsplit("/", 1)[0]


class DatabaseCollector:
    """A prometheus_client collector over one app's database engine."""

    def __init__(self, engine: Engine):
        self.engine = engine

    def collect(self):
        up = GaugeMetricFamily(
            "retain_metrics_database_up",
            "1 when this scrape could read the database, else 0 (the figures below are then missing)",
        )
        try:
            with Session(self.engine) as session:
                families = list(self._queue(session)) + list(self._learning(session)) + list(self._feedback(session))
        except Exception:  # a scrape must still answer with the process's own metrics
            log.exception("metrics: could not read the database")
            up.add_metric([], 0.0)
            yield up
            return
        up.add_metric([], 1.0)
        yield up
        yield from families

    # ------------------------------------------------------------------ queue and updates
    def _queue(self, session: Session):
        now = utcnow()
        models = {model_id: name for model_id, name in session.execute(select(Model.id, Model.name))}

        jobs = GaugeMetricFamily("retain_jobs", "Jobs by model and status", labels=["model", "status"])
        counts = {
            (model_id, status): n
            for model_id, status, n in session.execute(
                select(Job.model_id, Job.status, func.count()).group_by(Job.model_id, Job.status)
            )
        }
        for model_id, name in sorted(models.items(), key=lambda item: item[1]):
            for status in JobStatus:
                jobs.add_metric([name, status], float(counts.get((model_id, status), 0)))
        yield jobs

        oldest = GaugeMetricFamily(
            "retain_queue_oldest_job_age_seconds",
            "Age of the oldest queued job of each model (0 when none is queued)",
            labels=["model"],
        )
        created = dict(
            session.execute(
                select(Job.model_id, func.min(Job.created_at))
                .where(Job.status == JobStatus.QUEUED)
                .group_by(Job.model_id)
            ).all()
        )
        for model_id, name in sorted(models.items(), key=lambda item: item[1]):
            since = created.get(model_id)
            oldest.add_metric([name], max(0.0, (now - since).total_seconds()) if since is not None else 0.0)
        yield oldest

        expiries = CounterMetricFamily(
            "retain_job_lease_expiries",
            "Leases that expired because their worker stopped heartbeating, by model",
            labels=["model"],
        )
        requeues = CounterMetricFamily(
            "retain_job_requeues",
            "Running jobs put back in the queue (lease expired, or their worker shut down), by model",
            labels=["model"],
        )
        rejections = CounterMetricFamily(
            "retain_forgetting_gate_rejections",
            "Updates stored but not promoted because the forgetting gate tripped, by model",
            labels=["model"],
        )
        lost, back, rejected = defaultdict(int), defaultdict(int), defaultdict(int)
        durations, phases = defaultdict(list), defaultdict(list)
        rows = session.execute(select(Job.model_id, Job.status, Job.progress, Job.started_at, Job.finished_at))
        for model_id, status, progress, started_at, finished_at in rows:
            progress = progress or {}
            lost[model_id] += int(progress.get("lease_expiries", 0))
            back[model_id] += int(progress.get("requeues", 0))
            rejected[model_id] += status == JobStatus.REJECTED
            if status not in OUTCOMES or started_at is None:
                continue  # still to run, or cancelled before it started
            if finished_at is not None:
                durations[(status,)].append(max(0.0, (finished_at - started_at).total_seconds()))
            for phase, seconds in (progress.get("phase_seconds") or {}).items():
                phases[(phase, status)].append(float(seconds))
        for model_id, name in sorted(models.items(), key=lambda item: item[1]):
            expiries.add_metric([name], float(lost[model_id]))
            requeues.add_metric([name], float(back[model_id]))
            rejections.add_metric([name], float(rejected[model_id]))
        yield from (expiries, requeues, rejections)
        yield histogram(
            "retain_update_duration_seconds",
            "Wall time of finished updates, from the start of their last attempt to the end, by outcome",
            ["outcome"],
            durations,
        )
        yield histogram(
            "retain_update_phase_seconds",
            "Time finished updates spent in each phase of their last "
            "attempt (load, train or lambda_search, fisher, evaluate, store), by phase and outcome",
            ["phase", "outcome"],
            phases,
        )

        heartbeats = GaugeMetricFamily(
            "retain_worker_last_heartbeat_timestamp_seconds",
            "Unix time of each worker's last lease heartbeat on a job it holds or "
            "finished (workers seen in the last day; a worker heartbeats only while it runs "
            "a job)",
            labels=["worker"],
        )
        latest: dict[str, float] = {}
        for owner, beat in session.execute(
            select(Job.lease_owner, func.max(Job.heartbeat_at))
            .where(Job.lease_owner.is_not(None), Job.heartbeat_at >= now - HEARTBEAT_HORIZON)
            .group_by(Job.lease_owner)
        ):
            if beat is not None:
                worker = worker_of(owner)
                latest[worker] = max(latest.get(worker, 0.0), beat.timestamp())
        for worker, timestamp in sorted(latest.items()):
            heartbeats.add_metric([worker], timestamp)
        yield heartbeats

    # ------------------------------------------------------------------ learning
    def _learning(self, session: Session):
        serving = GaugeMetricFamily(
            "retain_model_serving_version", "Number of the version each model serves", labels=["model"]
        )
        average = GaugeMetricFamily(
            "retain_model_average_accuracy",
            "Mean test accuracy of the serving version over the tasks learnt up to it",
            labels=["model"],
        )
        bwt = GaugeMetricFamily(
            "retain_model_backward_transfer",
            "Backward transfer (BWT, Lopez-Paz & Ranzato "
            "2017) of the serving version: mean change of earlier tasks' test accuracy since "
            "each was learnt (negative = forgetting)",
            labels=["model"],
        )
        worst = GaugeMetricFamily(
            "retain_model_max_forgetting",
            "Largest forgetting of any earlier task under the "
            "serving version: best earlier test accuracy minus current (Chaudhry et al. 2018)",
            labels=["model"],
        )
        per_task = GaugeMetricFamily(
            "retain_model_task_accuracy",
            "Test accuracy of the serving version on each task it has learnt, by model and task id",
            labels=["model", "task"],
        )

        versions: dict[int, list[ModelVersion]] = defaultdict(list)
        for version in session.scalars(select(ModelVersion).order_by(ModelVersion.model_id, ModelVersion.number)):
            versions[version.model_id].append(version)
        cells: dict[int, dict[int, float]] = defaultdict(dict)
        for version_id, task_id, accuracy in session.execute(
            select(Accuracy.model_version_id, Accuracy.task_id, Accuracy.accuracy)
        ):
            cells[version_id][task_id] = accuracy

        for model in session.scalars(select(Model).where(Model.serving_version_id.is_not(None)).order_by(Model.name)):
            line = versions[model.id]
            current = next((v for v in line if v.id == model.serving_version_id), None)
            if current is None:
                continue
            serving.add_metric([model.name], float(current.number))
            # R over the promoted line up to the serving version, as GET /models/{name}/accuracy builds it
            line = [v for v in line if v.number < current.number and v.promoted and v.task_id is not None] + [current]
            order = [v.task_id for v in line if v.task_id is not None]
            figures = accuracy_matrix_metrics([[cells[v.id].get(task_id) for task_id in order] for v in line])
            if figures["average_accuracy"] is not None:
                average.add_metric([model.name], figures["average_accuracy"])
            if figures["bwt"] is not None:
                bwt.add_metric([model.name], figures["bwt"])
            if figures["forgetting_per_task"]:
                worst.add_metric([model.name], max(figures["forgetting_per_task"]))
            for task_id, accuracy in sorted(cells[current.id].items()):
                per_task.add_metric([model.name, str(task_id)], accuracy)
        yield from (serving, average, bwt, worst, per_task)

    # ------------------------------------------------------------------ feedback loop (app/feedback/)
    def _feedback(self, session: Session):
        live = GaugeMetricFamily(
            "retain_model_live_accuracy",
            "Served accuracy of the serving version over its last accuracy_window labelled predictions "
            "(models with a feedback policy; absent until a prediction of that version is labelled)",
            labels=["model", "version"],
        )
        labelled = GaugeMetricFamily(
            "retain_model_live_accuracy_samples",
            "Labelled predictions of the serving version that retain_model_live_accuracy is measured over",
            labels=["model", "version"],
        )
        buffered = GaugeMetricFamily(
            "retain_model_feedback_buffered_labels",
            "Labels received and not yet learnt by a trigger-made update",
            labels=["model"],
        )
        rows = session.execute(
            select(Model.id, Model.name, Model.serving_version_id, ModelVersion.number, FeedbackPolicy.policy)
            .join(FeedbackPolicy, FeedbackPolicy.model_id == Model.id)
            .outerjoin(ModelVersion, ModelVersion.id == Model.serving_version_id)
            .order_by(Model.name)
        ).all()
        for model_id, name, version_id, number, policy in rows:
            buffered.add_metric([name], float(buffered_labels(session, model_id)))
            if version_id is None:
                continue
            accuracy, n = live_accuracy(session, model_id, version_id, int(policy.get("accuracy_window", 500)))
            labelled.add_metric([name, str(number)], float(n))
            if accuracy is not None:
                live.add_metric([name, str(number)], accuracy)
        yield from (live, labelled, buffered)
