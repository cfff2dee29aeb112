"""Errors a user can cause. The CLI prints them as one line and exits with code 2."""


class N2NError(Exception):
    """Base class for every error caused by bad input (paths, names, formats, shapes)."""


class DataError(N2NError):
    """A data set is missing, truncated or in the wrong format."""


class ModelError(N2NError):
    """An unknown model name or an impossible model configuration."""


class CheckpointError(N2NError):
    """A checkpoint is missing, unreadable, or does not fit the data it is used with."""


class ConfigError(N2NError):
    """An option or configuration value is invalid."""


class RunInUseError(N2NError):
    """Another live process owns the run folder (it holds the folder's lock)."""
