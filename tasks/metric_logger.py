"""The metric-logger protocol tasks log through; the flow decides where metrics go."""

from __future__ import annotations

from typing import Protocol

from models.errors import TrackingServerGone


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
        try:
            for key, value in metrics.items():
                self.client.log_metric(self.run_id, key, float(value), step=step or 0)
        except Exception as err:
            if tracking_unreachable(err):
                raise server_gone() from None
            raise


def tracking_unreachable(err: BaseException) -> bool:
    """``err`` says the MLflow tracking server did not answer (refused, reset, timed out, after
    MLflow's own retries), as opposed to a request it answered with an error."""
    if isinstance(err, ConnectionError) or type(err).__module__.startswith(("requests", "urllib3")):
        return True
    text = str(err)
    return text.startswith("API request to ") and any(
        words in text for words in ("Max retries exceeded", "Connection aborted", "Connection refused", "timed out"))


def server_gone() -> TrackingServerGone:
    """The error for a tracking server that stopped answering during a run."""
    import mlflow

    return TrackingServerGone(f"MLflow tracking server {mlflow.get_tracking_uri()} stopped answering during the run; "
                              "the finished steps are kept on disk: restart the server and re-run to continue from them "
                              "(the run is then marked FAILED)")
