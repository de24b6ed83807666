"""The metric-logger protocol tasks log through; the flow decides where metrics go."""

from __future__ import annotations

from typing import Protocol


class MetricLogger(Protocol):
    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None: ...


class NullLogger:
    def log_metrics(self, metrics, step=None):
        pass


class MlflowLogger:
    """Logs to one MLflow run by id (thread-safe: no reliance on the active-run stack)."""

    def __init__(self, run_id: str):
        from mlflow.tracking import MlflowClient

        self.client, self.run_id = MlflowClient(), run_id

    def log_metrics(self, metrics, step=None):
        for key, value in metrics.items():
            self.client.log_metric(self.run_id, key, float(value), step=step or 0)
