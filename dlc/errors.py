"""The library's error types: each says what was wrong and what is expected.

The command line prints these as one clear line (no traceback) and exits with status 1.
"""


class DLCError(Exception):
    """Base of every error caused by input: a config, a file, a dataset, a code, a checkpoint."""


class ConfigError(DLCError, ValueError):
    """A config file or override that does not fit its dataclass."""


class DataError(DLCError, RuntimeError):
    """A dataset that cannot be loaded, with what to do about it."""


class CheckpointError(DLCError, RuntimeError):
    """A checkpoint or saved model that is missing, partial or corrupt."""


class CodeError(DLCError, ValueError):
    """Codes of the wrong shape, dtype or values."""


class TrainingDiverged(DLCError, RuntimeError):
    """The loss, the gradients or the weights became NaN or infinite."""


class RunLocked(DLCError, RuntimeError):
    """Another training holds the run directory."""
