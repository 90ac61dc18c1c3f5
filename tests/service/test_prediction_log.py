"""The prediction log's writer (app/feedback/prediction_log.py) on SQLite and Postgres: the rows it
writes with the driver's executemany read back through the ORM as the values served, the log stays
within its bound, shutdown writes what is buffered, and rows stored zlib-compressed by the writer
before still read."""

import zlib
from datetime import UTC, datetime, timedelta

import numpy as np
import torch
from sqlalchemy import func, select

from app.db.session import get_engine
from app.db.tables import LoggedSample, Model
from app.feedback.prediction_log import LogPolicy, PredictionLog, unpack_inputs, unpack_text
from app.learning import Prediction


def model_id(session_factory, make_job) -> int:
    make_job("m")
    with session_factory() as session:
        return session.scalar(select(Model.id).where(Model.name == "m"))


def test_rows_written_read_back_as_served(settings, session_factory, make_job):
    policy = LogPolicy(model_id(session_factory, make_job), 1.0, 100)
    log = PredictionLog(get_engine(settings), flush_interval=60, policy_interval=60)
    x = torch.tensor(np.random.default_rng(0).normal(size=(3, 4)), dtype=torch.float32)
    served = [Prediction(7, 0.25, []), Prediction("seven", 0.5, []), Prediction(7, 0.75, [])]
    ids = log.record(policy, None, x, served)
    assert len(set(ids)) == 3 and log.flush() == 3 and log.flush() == 0
    with session_factory() as session:
        rows = list(session.scalars(select(LoggedSample).order_by(LoggedSample.id)))
    assert [row.prediction_id for row in rows] == ids
    assert [row.predicted for row in rows] == [7, "seven", 7]
    assert [row.probability for row in rows] == [0.25, 0.5, 0.75]
    assert all(row.model_id == policy.model_id and row.model_version_id is None for row in rows)
    assert all(row.label is None and row.task_id is None for row in rows)
    assert all(abs(row.created_at - datetime.now(UTC)) < timedelta(minutes=5) for row in rows)
    for row, sample in zip(rows, x.numpy(), strict=True):
        assert np.array_equal(unpack_inputs(row.inputs, (4,)), sample)
    old = np.arange(4, dtype=np.float32)  # as the writer stored inputs before: zlib-compressed float32
    assert np.array_equal(unpack_inputs(zlib.compress(old.tobytes(), 1), (4,)), old)


def test_the_log_keeps_its_bound_and_shutdown_writes_the_buffer(settings, session_factory, make_job):
    policy = LogPolicy(model_id(session_factory, make_job), 1.0, 5)
    log = PredictionLog(get_engine(settings), flush_interval=60, policy_interval=60)
    log.start()

    def logged():
        with session_factory() as session:
            return list(session.scalars(select(LoggedSample.prediction_id).order_by(LoggedSample.id)))

    def served(count):
        return log.record(policy, None, torch.zeros(count, 4), [Prediction(1, 0.5, [])] * count)

    first = served(3)
    log.flush()
    second = served(4)  # the log holds 7: the two oldest go, with no count (the size is kept)
    log.flush()
    assert logged() == (first + second)[-5:]
    log.forget_log_sizes()  # as every feedback_policy_interval: counted again
    third = served(2)
    log.close()  # the app's shutdown: the buffer is written
    assert logged() == (first + second + third)[-5:]
    with session_factory() as session:
        assert session.scalar(select(func.count(LoggedSample.id))) == 5


def test_texts_are_written_as_utf8_and_their_buffer_is_bounded(settings, session_factory, make_job, monkeypatch):
    from app.feedback import prediction_log

    policy = LogPolicy(model_id(session_factory, make_job), 1.0, 100)
    log = PredictionLog(get_engine(settings), flush_interval=60, policy_interval=60)
    texts = ["a goal ⚽", "Le marché", "x" * 50]
    served = [Prediction("sport", 0.5, []), Prediction("business", 0.75, []), Prediction("sport", 0.25, [])]
    ids = log.record(policy, None, texts, served)
    numbers = log.record(policy, None, torch.ones(1, 4), served[:1])  # both kinds in one flush
    assert all(ids) and log.flush() == 4
    with session_factory() as session:
        rows = {row.prediction_id: row for row in session.scalars(select(LoggedSample))}
    assert [unpack_text(rows[i].inputs) for i in ids] == texts
    assert [rows[i].predicted for i in ids] == ["sport", "business", "sport"]
    assert np.array_equal(unpack_inputs(rows[numbers[0]].inputs, (4,)), np.ones(4, dtype=np.float32))

    monkeypatch.setattr(prediction_log, "MAX_BUFFERED_TEXT_CHARS", 100)
    assert all(log.record(policy, None, ["y" * 60], served[:1]))  # 60 buffered
    assert all(log.record(policy, None, ["y" * 60], served[:1]))  # 120: past the bound from now on
    assert log.record(policy, None, ["z"], served[:1]) == [None]  # unlogged while the writer lags
    assert all(log.record(policy, None, torch.ones(1, 4), served[:1]))  # numbers are not held back by texts
    assert log.flush() == 3
    assert all(log.record(policy, None, ["z"], served[:1]))  # written: texts are logged again
