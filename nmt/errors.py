"""The project's own errors: input it cannot work with, said in one line.

The CLI prints an `NmtError` as `nmt: error: ...` and exits with status 2; the server
answers it with a 4xx. Anything else is a bug, and shows its traceback.
"""


class NmtError(ValueError):
    """Bad input, named in the message: a file and line, an option, a config key."""
