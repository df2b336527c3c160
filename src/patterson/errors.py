"""The one exception type that patterson raises for bad input."""


class PattersonError(ValueError):
    """Bad input or an impossible request; the message is one line that names the problem."""
