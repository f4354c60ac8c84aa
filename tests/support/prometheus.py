"""A real Prometheus (Debian's ``prometheus``) scraping test servers: a generated config, a
temporary storage folder, a free 127.0.0.1 port, stopped by PID."""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.ports import free_port
from tests.support.process import log_tail, stop_process

DEFAULT_PATH = "/usr/bin/prometheus"


def prometheus_path() -> str:
    """``PROMETHEUS_PATH`` (scripts/test-env.sh installs Debian's package and sets it), else
    Debian's path; fails with what to do when there is none (tests never skip for it)."""
    path = os.environ.get("PROMETHEUS_PATH") or DEFAULT_PATH
    if not os.access(path, os.X_OK):
        raise RuntimeError(
            f"Prometheus not found at {path}: run 'apt-get install prometheus' as root (or set "
            "PROMETHEUS_PATH to a prometheus binary). The metrics test scrapes with it."
        )
    return path


@dataclass
class Prometheus:
    """One Prometheus scraping ``targets`` ("127.0.0.1:port") every ``interval``."""

    targets: list[str]
    interval: str = "1s"
    headers: dict[str, str] = field(default_factory=dict)  # e.g. a bearer token
    port: int = field(default_factory=free_port)
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="rtcsite-prom-")))
    process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def config(self) -> str:
        job = {
            "job_name": "rtcsite",
            "scrape_interval": self.interval,
            "scrape_timeout": self.interval,
            "static_configs": [{"targets": self.targets}],
        }
        token = self.headers.get("Authorization", "").removeprefix("Bearer ")
        if token:
            job["authorization"] = {"type": "Bearer", "credentials": token}
        # JSON is YAML: no YAML library needed to write it
        return json.dumps({"global": {"scrape_interval": self.interval}, "scrape_configs": [job]})

    def start(self, timeout: float = 60) -> Prometheus:
        config = self.workdir / "prometheus.yml"
        config.write_text(self.config())
        self.log_path = self.workdir / "prometheus.log"
        log = open(self.log_path, "wb")  # noqa: SIM115 - kept open for the child's lifetime
        self.process = subprocess.Popen(
            [
                prometheus_path(),
                f"--config.file={config}",
                f"--storage.tsdb.path={self.workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"Prometheus exited early:\n{log_tail(self.log_path)}")
            try:
                with urllib.request.urlopen(self.url + "/-/ready", timeout=1) as response:
                    if response.status == 200:
                        return self
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"Prometheus not ready within {timeout}s:\n{log_tail(self.log_path)}")

    def query(self, promql: str) -> list[dict]:
        """An instant query's result vector (``[{"metric": {...}, "value": [t, "v"]}]``)."""
        url = f"{self.url}/api/v1/query?{urllib.parse.urlencode({'query': promql})}"
        with urllib.request.urlopen(url, timeout=10) as response:
            body = json.load(response)
        assert body["status"] == "success", body
        return body["data"]["result"]

    def value(self, promql: str) -> float | None:
        """The single value of a query that sums to one series (None: no data yet)."""
        result = self.query(promql)
        return float(result[0]["value"][1]) if result else None

    def wait_for_value(self, promql: str, expected: float, within: float = 60) -> None:
        """Until the query answers ``expected``; fails with the last answer and the targets'
        health (a scrape error shows there)."""
        deadline = time.monotonic() + within
        last = None
        while time.monotonic() < deadline:
            last = self.value(promql)
            if last == expected:
                return
            time.sleep(0.5)
        with urllib.request.urlopen(self.url + "/api/v1/targets", timeout=10) as response:
            targets = json.load(response)["data"]["activeTargets"]
        health = [(t["scrapeUrl"], t["health"], t["lastError"]) for t in targets]
        raise AssertionError(f"{promql} = {last}, expected {expected}; targets: {health}")

    def stop(self) -> None:
        stop_process(self.process)
