"""The one exception type tinydact raises for bad input.

Library code raises `TinydactError` with a message that names what is wrong (a path, a key,
a line number). The command line prints that message on one line and exits non-zero, so a
user never sees a traceback for a mistake of theirs.
"""


class TinydactError(Exception):
    """A problem with the user's input: a file, a checkpoint, a flag, a data row."""
