"""The one exception type that the CLI turns into a clear message and a non-zero exit."""


class SeedVLMError(Exception):
    """A user-facing error: bad input, missing file, mismatched model. The message names the culprit."""
