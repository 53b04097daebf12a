"""The one exception that means "the user's input is wrong", which the CLI turns into exit 2."""


class InitlintError(Exception):
    """A problem with the user's input: what went wrong and how to mend it.

    The CLI prints the message without a traceback and exits with status 2.
    """
