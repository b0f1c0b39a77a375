"""`nmt serve`'s /metrics: counters and histograms in Prometheus' text exposition format.

Every answer is counted once, by `nmt.serve.guard`, whatever gave it (a handler, the door,
a time limit, the error boundary): `nmt_requests_total{path,status}`, 5xx included. The
path label is a route of the app or "other", so that no client can make new series.
"""

from __future__ import annotations

import threading
from collections import Counter

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    def __init__(self, paths: set[str]):
        self.paths = paths  # the labels a path may have; any other path is "other"
        self.requests: Counter = Counter()  # (path, status) -> count
        self.latency: dict[str, list[int]] = {}  # path -> count per bucket
        self.latency_sum: Counter = Counter()
        self.events: Counter = Counter()  # "disconnects", "batch_retries", ... -> count
        self.batches = self.batched_lines = 0
        self.lock = threading.Lock()

    def label(self, path: str) -> str:
        if path in self.paths:
            return path
        if path.startswith("/download_file/"):  # one series, whatever the file's name
            return "/download_file/{name}"
        return "/static" if path.startswith("/static/") else "other"

    def request(self, path: str, status: int, seconds: float) -> None:
        path = self.label(path)
        with self.lock:
            self.requests[path, status] += 1
            counts = self.latency.setdefault(path, [0] * (len(LATENCY_BUCKETS) + 1))
            counts[sum(seconds > b for b in LATENCY_BUCKETS)] += 1
            self.latency_sum[path] += seconds

    def count(self, event: str, n: int = 1) -> None:
        with self.lock:
            self.events[event] += n

    def batch(self, lines: int) -> None:
        with self.lock:
            self.batches += 1
            self.batched_lines += lines

    def render(self, pending: int) -> str:
        with self.lock:
            out = ["# TYPE nmt_requests_total counter"]
            for (path, status), n in sorted(self.requests.items()):
                out.append(f'nmt_requests_total{{path="{path}",status="{status}"}} {n}')
            out.append("# TYPE nmt_request_seconds histogram")
            for path, counts in sorted(self.latency.items()):
                total = 0
                for bound, n in zip([*LATENCY_BUCKETS, "+Inf"], counts, strict=True):
                    total += n
                    out.append(f'nmt_request_seconds_bucket{{path="{path}",le="{bound}"}} {total}')
                out.append(f'nmt_request_seconds_count{{path="{path}"}} {total}')
                out.append(f'nmt_request_seconds_sum{{path="{path}"}} {self.latency_sum[path]}')
            out += ["# TYPE nmt_batches_total counter", f"nmt_batches_total {self.batches}"]
            out += ["# TYPE nmt_batched_lines_total counter"]
            out += [f"nmt_batched_lines_total {self.batched_lines}"]
            for event in ("client_disconnects", "batch_retries", "server_errors"):
                out += [f"# TYPE nmt_{event}_total counter"]
                out += [f"nmt_{event}_total {self.events[event]}"]
            out += ["# TYPE nmt_pending_requests gauge", f"nmt_pending_requests {pending}"]
            return "\n".join(out) + "\n"
