"""Export turboloop's loop metrics (loop.stats()) in Prometheus' text format.

    python examples/prometheus_stats.py          # serves http://127.0.0.1:9464/metrics for 60 s

Counters (totals since the loop was made) get a ``_total`` suffix; everything else is a gauge.
Times are in seconds.
"""

from __future__ import annotations

import asyncio

import turboloop

# Metrics that only ever grow: Prometheus counters.
COUNTERS = {"iterations", "callbacks_run", "time_in_callbacks", "time_polling", "executor_tasks_started"}

HELP = {
    "iterations": "Loop iterations (polls for I/O)",
    "callbacks_run": "Callbacks run (call_soon, timers, I/O, task steps)",
    "time_in_callbacks": "Seconds spent running callbacks",
    "time_polling": "Seconds spent polling for I/O",
    "longest_callback": "Seconds taken by the longest callback so far",
    "ready_queue_depth": "Callbacks ready to run",
    "timers_pending": "Timers scheduled and not cancelled",
    "readers": "File descriptors watched for reading",
    "writers": "File descriptors watched for writing",
    "handles_open": "Reader and writer callbacks registered",
    "transports_open": "Transports open",
    "executor_workers": "Worker threads of the default executor",
    "executor_workers_busy": "Of those, running a task",
    "executor_queue_depth": "Tasks waiting for a worker",
    "executor_tasks_started": "Tasks a worker has started",
    "executor_task_latency": "Mean seconds a task waited for a worker",
    "executor_task_latency_max": "Longest seconds a task waited for a worker",
}


def prometheus_text(loop: turboloop.Loop) -> str:
    """loop.stats() as Prometheus text exposition."""
    lines = []
    for key, value in loop.stats().items():
        counter = key in COUNTERS
        name = f"turboloop_{key}_total" if counter else f"turboloop_{key}"
        lines.append(f"# HELP {name} {HELP.get(key, key)}")
        lines.append(f"# TYPE {name} {'counter' if counter else 'gauge'}")
        lines.append(f"{name} {value}")
    return "\n".join(lines) + "\n"


async def serve_metrics(host: str = "127.0.0.1", port: int = 9464) -> asyncio.Server:
    """A minimal HTTP endpoint answering every request with the running loop's metrics."""
    loop = asyncio.get_running_loop()

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        body = prometheus_text(loop).encode()
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\n"
            b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body)
        )
        await writer.drain()
        writer.close()

    return await asyncio.start_server(answer, host, port)


async def main() -> None:
    server = await serve_metrics()
    print("metrics at http://127.0.0.1:9464/metrics")
    async with server:
        await asyncio.sleep(60)


if __name__ == "__main__":
    turboloop.run(main())
