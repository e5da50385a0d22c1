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


class MediaError(AvitsError):
    """A media file could not be read or written; the message names the file."""


class MediaFileNotFoundError(MediaError, FileNotFoundError):
    """A media file does not exist."""


class MediaFormatError(MediaError, ValueError):
    """A media file is unreadable, lacks a required stream, or a clip cannot be encoded."""


class StoreError(AvitsError, ValueError):
    """A run folder, table name, part file or run.json is missing or invalid."""


class SchemaError(StoreError):
    """Rows handed to RunStore.append do not fit the table's schema; the message names table, column, row, value."""


class MeasurementError(AvitsError, ValueError):
    """The media cannot be measured (empty, too small, non-finite, silent); the message says why."""


class FlatSignalError(AvitsError, ValueError):
    """The audio is silent, the video static, or no event was found: nothing to measure."""


class EvoSearchError(AvitsError, RuntimeError):
    """EvoSearch cannot go on (e.g. no candidate of the pool has a complete set of rewards)."""
