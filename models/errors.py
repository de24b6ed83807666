"""User mistakes, as exceptions: one base class the CLI catches, and the kinds ``models/`` raises.

An ``ExitflowError`` says the input is wrong (params, data, a checkpoint, a model choice), not the
code: the ``exitflow`` command prints its message as one ``error: ...`` line and exits 2. Any
other exception is a bug and keeps its traceback. Each subclass names the input in its message.

Subclasses elsewhere: ``ConfigError`` (config/params.py), ``DataError`` (tasks/data.py),
``BackboneError`` (tasks/backbones.py), ``VersioningError`` (tasks/versioning.py),
``MemorizedLayerError`` (tasks/consistentee.py), ``DifficultyDataError`` (tasks/difficulty.py),
``HashTableError`` (models/hashee.py), ``NonFiniteLossError`` (models/training.py),
``GenerationError`` (models/generation.py).
"""


class ExitflowError(Exception):
    """A user mistake: the message says what to change."""


class ModelSpecError(ExitflowError, ValueError):
    """A model cannot be built as asked: a backbone with no exit adapter, exit-stack options or an
    exit architecture it does not take, a criterion the model lacks the module for."""


class CheckpointError(ExitflowError, ValueError):
    """A saved checkpoint (or the derived architecture it is built from) does not fit the step
    that reads it; the message names the file."""


class MissingCheckpointError(CheckpointError, FileNotFoundError):
    """A checkpoint (or derived architecture) the step reads is not there: run the step that writes it."""
