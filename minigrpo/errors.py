"""The one error a user of minigrpo should ever see: `InputError`, bad input named precisely.

Every reader of a file, a flag or a checkpoint raises `InputError` with a message that names the
file (and line), the field, flag or tensor, what was found and what was expected. The `minigrpo`
command prints such a message as one line and exits 2; anything else is a bug and keeps its
traceback. The pure maths modules (advantages, loss, sampler) raise plain `ValueError` for misuse
by calling code: a program passed them something wrong, not a user.
"""


class InputError(ValueError):
    """Bad user input (a file, a field, a flag, a tensor); the message says what was expected."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during a stage; the message says what was kept and how to go on (e.g. `--resume`)."""
