"""The one exception type the CLI turns into a one-line message and exit status 2."""


class HyperCloneError(Exception):
    """Bad input or an unreachable request; the message is shown to the user as is."""
