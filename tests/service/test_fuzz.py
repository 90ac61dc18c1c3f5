"""Schemathesis against the real service over HTTP: every operation of /openapi.json, with an admin
key, all of Schemathesis' checks (no 5xx, every status code and body as documented, content types,
headers). Bounded by FUZZ_EXAMPLES per operation (RETAIN_FUZZ_EXAMPLES to fuzz longer), so CI stays
within a couple of minutes; every failure names the request that caused it."""

import itertools
import os

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import CHECKS, load_all_checks
from schemathesis.generation.modes import GenerationMode

from app.processes import LocalServer

FUZZ_EXAMPLES = int(os.environ.get("RETAIN_FUZZ_EXAMPLES", "25"))

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def fuzzed_server(tmp_path_factory):
    # no worker: fuzzed tasks are queued, never trained (training is tested elsewhere); fast polling unneeded
    with LocalServer(
        tmp_path_factory.mktemp("fuzz"), embedded_worker=False, extra_env={"RETAIN_MAX_UPLOAD_BYTES": "1000000"}
    ) as server:
        yield server


@pytest.fixture(scope="module")
def api_schema(fuzzed_server):
    return schemathesis.openapi.from_url(f"{fuzzed_server.url}/openapi.json")


def test_no_server_error_and_every_answer_as_documented(fuzzed_server, api_schema):
    """One Hypothesis run per operation (Schemathesis' pytest plugin does not load under this pytest);
    every operation's first failure is collected, so one run reports them all."""
    load_all_checks()
    headers = {"Authorization": f"Bearer {fuzzed_server.api_key}"}
    failures, sent = [], []
    checks = list(CHECKS.get_all())  # --checks all
    for result, mode in itertools.product(api_schema.get_all_operations(), GenerationMode):
        operation = result.ok()

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(
            max_examples=FUZZ_EXAMPLES,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def fuzz(case):
            sent.append(operation.label)  # noqa: B023 -- fuzz() runs within this iteration
            case.call_and_validate(headers=headers, checks=checks, timeout=30)

        try:
            fuzz()
        except Unsatisfiable:  # no parameters or body to break (GET /livez in negative mode): nothing to send
            continue
        except (Exception, BaseExceptionGroup) as failure:  # a failed check: go on, report every operation's
            failures.append(f"{operation.label} ({mode} data): {failure}")
    print(f"schemathesis: {len(sent)} requests over {len(set(sent))} operations, {len(failures)} failing")
    assert not failures, "\n\n".join(failures)
