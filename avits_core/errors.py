"""Exception types. Every user-facing error names the offending file, field or value."""


class AvitsError(Exception):
    """Base class for errors that the CLI turns into a clear message and exit code 2."""


class ConfigError(AvitsError, ValueError):
    """A run config, prompt file or CLI option is invalid."""


class PromptError(ConfigError):
    """A prompt file is missing, empty or malformed."""


class UnknownNameError(AvitsError, KeyError):
    """An unknown verifier, aggregator, generator or search name. The message lists the known ones."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class ScoreError(AvitsError, ValueError):
    """Scores handed to an aggregator are malformed (NaN, infinite, wrong shape)."""


class MissingWeightsError(AvitsError, FileNotFoundError):
    """A model's weights are not on disk; the message says which file and how to get it."""
