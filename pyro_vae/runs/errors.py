"""The errors of configurations and run directories."""


class ConfigError(ValueError):
    """A configuration value or file that cannot be used as given."""


class RunDirectoryError(ValueError):
    """A run directory that cannot be written or read as asked."""
