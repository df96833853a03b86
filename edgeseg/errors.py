"""User-facing errors: the CLI prints these as one line and exits non-zero, without a traceback."""


class EdgesegError(Exception):
    """A problem with the user's input (unknown name, missing file, bad weights...), with the fix in the text."""

    exit_code = 2
