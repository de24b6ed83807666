"""Failures that are no bug, as exceptions: the base classes the CLI catches, and the kinds ``models/`` raises.

An ``ExitflowError`` says the input is wrong (params, data, a checkpoint, a model choice), not the
code: the ``exitflow`` command prints its message as one ``error: ...`` line and exits 2. An
``EnvironmentFault`` says the machine failed the run (a full disk, a tracking server gone): one
``error: ...`` line too, exit 3; the work on disk is kept and a re-run continues. Any other
exception is a bug and keeps its traceback. Each subclass names the input or the place in its message.

Subclasses elsewhere: ``ConfigError`` (config/params.py), ``DataError`` (tasks/data.py),
``BackboneError`` (tasks/backbones.py), ``VersioningError`` (tasks/versioning.py),
``MemorizedLayerError`` (tasks/consistentee.py), ``DifficultyDataError`` (tasks/difficulty.py),
``HashTableError`` (models/hashee.py), ``NonFiniteLossError`` (models/training.py),
``GenerationError`` (models/generation.py).
"""


class CleanFailure(Exception):
    """A failure that is no bug: the CLI prints its message as one line, without a traceback."""


class ExitflowError(CleanFailure):
    """A user mistake: the message says what to change (exit 2)."""


class EnvironmentFault(CleanFailure):
    """The machine or a service failed the run, not the input nor the code (exit 3)."""


class DiskFullError(EnvironmentFault, OSError):
    """No space left where an artifact was being written; nothing half-written is left."""


class TrackingServerGone(EnvironmentFault, ConnectionError):
    """The MLflow tracking server stopped answering during a run."""


class ModelSpecError(ExitflowError, ValueError):
    """A model cannot be built as asked: a backbone with no exit adapter, exit-stack options or an
    exit architecture it does not take, a criterion the model lacks the module for."""


class CheckpointError(ExitflowError, ValueError):
    """A saved checkpoint (or the derived architecture it is built from) does not fit the step
    that reads it; the message names the file."""


class MissingCheckpointError(CheckpointError, FileNotFoundError):
    """A checkpoint (or derived architecture) the step reads is not there: run the step that writes it."""
