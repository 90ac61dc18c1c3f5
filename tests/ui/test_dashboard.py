"""The dashboard in a real browser: the real service as a process (embedded worker, SQLite), headless
Chromium driven by Playwright, three small pmnist-conflict tasks taught while the page watches.

Chromium is Debian's (`apt-get install chromium`), found on PATH or at RETAIN_CHROMIUM; without it,
or without the playwright package, the test skips and says so. The screenshot goes to the test's tmp
dir and, when RETAIN_SCREENSHOT_DIR is set, to that directory too (docs/dashboard.png comes from it).
"""

import os
import shutil
import time
from pathlib import Path

import httpx
import pytest

from app.processes import LocalServer

pytestmark = pytest.mark.slow  # a real server process and a browser
FORM = {"architecture": "mlp", "architecture_options": '{"hidden": [64]}', "epochs": "2", "ewc_lambda": "1000"}


def chromium() -> str:
    path = os.environ.get("RETAIN_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not path:
        pytest.skip("Chromium not found (apt-get install chromium, or set RETAIN_CHROMIUM to its binary)")
    return path


def teach(api: httpx.Client, path: Path, name: str, **fields) -> int:
    with open(path, "rb") as upload:
        response = api.post(
            "/tasks", data={"model": "m", "name": name, **FORM, **fields}, files={"file": (path.name, upload)}
        )
    assert response.status_code == 202, response.text
    return response.json()["job_id"]


def finished(api: httpx.Client, job_id: int, timeout: float = 180.0) -> dict:
    deadline = time.monotonic() + timeout
    while (job := api.get(f"/jobs/{job_id}").json())["status"] in ("queued", "running"):
        assert time.monotonic() < deadline, f"job {job_id} still {job['status']} after {timeout} s"
        time.sleep(0.2)
    return job


def test_dashboard_shows_the_accuracy_matrix_live_and_rolls_back(tmp_path, pmnist_file):
    sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")
    executable = chromium()
    tasks = [pmnist_file(k, n_train=600, n_test=100) for k in range(3)]
    env = {"RETAIN_DEVICE": "cpu", "RETAIN_POLL_INTERVAL": "0.1", "RETAIN_PROGRESS_INTERVAL": "0.2"}
    with (
        LocalServer(tmp_path / "service", extra_env=env) as server,
        httpx.Client(base_url=server.url, timeout=60, headers={"Authorization": f"Bearer {server.api_key}"}) as api,
        sync_api.sync_playwright() as playwright,
    ):
        assert finished(api, teach(api, tasks[0], "pmnist-0", max_forgetting="1"))["status"] == "succeeded"
        browser = playwright.chromium.launch(executable_path=executable, headless=True)
        page = browser.new_page(viewport={"width": 1440, "height": 960})
        sync_api.expect.set_options(timeout=20_000)  # a loaded 2-core CI machine: polls and refreshes take a while
        sent = []
        page.on("request", lambda request: sent.append(request))
        page.goto(f"{server.url}/ui")  # the page itself needs no key: it holds no data
        expect = sync_api.expect
        # auth: the first data request goes without a key, the server answers 401, the prompt opens;
        # the admin key the service wrote to its data dir, entered there, goes on every later request
        expect(page.locator("#auth-prompt")).to_be_visible()
        assert all("authorization" not in request.headers for request in sent)
        page.fill("#api-key-input", server.api_key)
        page.click("#api-key-save")
        expect(page.locator("#heatmap .row")).to_have_count(1)

        # B under EWC, then C fine-tuned behind a strict gate, taught while the page polls /jobs
        job_b = teach(api, tasks[1], "pmnist-1")
        expect(page.locator(f'#jobs li[data-job-id="{job_b}"]')).to_be_visible()
        assert finished(api, job_b)["status"] == "succeeded"
        job_c = teach(
            api, tasks[2], "pmnist-2", strategy="finetune", max_forgetting="0"
        )  # the gate is read when C runs
        assert finished(api, job_c)["status"] == "rejected"  # fine-tuning on a conflicting task forgets
        expect(page.locator(f'#jobs li[data-job-id="{job_c}"]')).to_have_attribute("data-status", "rejected")
        expect(page.locator("#heatmap .row")).to_have_count(3)

        matrix = api.get("/models/m/accuracy").json()
        shown = page.eval_on_selector_all(
            "#heatmap .cell",
            """cells => cells.map(c => [
            Number(c.dataset.version), Number(c.dataset.task), c.dataset.accuracy,
            c.querySelector('.value').textContent])""",
        )
        expected = [(row["model_version"], task["task_id"]) for row in matrix["rows"] for task in matrix["tasks"]]
        assert [(version, task) for version, task, _, _ in shown] == expected
        values = {
            (row["model_version"], cell["task_id"]): cell["accuracy"]
            for row in matrix["rows"]
            for cell in row["accuracy"]
        }
        for version, task, raw, text in shown:
            if (version, task) in values:
                assert float(raw) == values[(version, task)] and text == f"{values[(version, task)]:.3f}"
            else:
                assert raw == "" and text == "–"
        assert page.get_attribute("#serving-mark", "data-version") == "2"
        rejected = page.locator('#heatmap .row[data-version="3"]')
        expect(rejected).to_have_attribute("data-promoted", "false")
        expect(rejected.locator(".row-label")).to_contain_text("rejected")
        expect(page.locator('#versions tr[data-version="3"] button[data-action="promote"]')).to_be_visible()
        expect(page.locator("#task-lines circle")).to_have_count(sum(len(row["accuracy"]) for row in matrix["rows"]))

        screenshot = tmp_path / "dashboard.png"
        page.screenshot(path=str(screenshot), full_page=True)
        if os.environ.get("RETAIN_SCREENSHOT_DIR"):
            Path(os.environ["RETAIN_SCREENSHOT_DIR"]).mkdir(parents=True, exist_ok=True)
            shutil.copyfile(screenshot, Path(os.environ["RETAIN_SCREENSHOT_DIR"]) / "dashboard.png")
        assert screenshot.stat().st_size > 10_000

        page.click('#versions button[data-action="serve"][data-version="1"]')
        expect(page.locator("#serving-mark")).to_have_attribute("data-version", "1")
        assert api.get("/models/m").json()["serving_version"] == 1

        with page.expect_request(lambda request: "/jobs" in request.url) as polled:
            pass
        assert polled.value.headers.get("authorization") == f"Bearer {server.api_key}"
        # a key the server does not know: its real 401 opens the prompt again
        page.click("#api-key-button")
        page.fill("#api-key-input", "secret-key")
        page.click("#api-key-save")
        expect(page.locator("#auth-prompt")).to_be_visible()
        expect(page.locator("#auth-message")).to_contain_text("refused this API key")
        browser.close()
