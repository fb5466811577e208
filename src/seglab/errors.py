"""The failures seglab expects, and the exit status each gives.

An expected failure is a ``SeglabError``: its message is all the user needs (what is wrong,
which file or full config key, and what to do), so the entry scripts print it as one message,
write it to the run's log and exit without a traceback (``HYDRA_FULL_ERROR=1`` shows it).
Anything else is a bug or an environment problem and keeps its traceback.

Exit statuses (documented in docs/reliability.md):

- ``EXIT_INPUT`` (2): bad input: config values, data files, checkpoints, paths. Fix the input
  and run again.
- ``EXIT_FAILURE`` (1): everything else, out of memory included, and unexpected errors.
- 130 / 143: interrupted (Ctrl+C) / stopped by SIGTERM (``seglab.entry_point``).

``InputError`` is also a ``ValueError`` and ``MissingFileError`` a ``FileNotFoundError``, so
code (and tests) that catch the built-in types keep working.
"""

from __future__ import annotations

EXIT_FAILURE = 1
EXIT_INPUT = 2


class SeglabError(Exception):
    """An expected failure whose message says what is wrong and what to do."""

    exit_code = EXIT_FAILURE


class InputError(SeglabError, ValueError):
    """Bad input: a config value, a data file, a checkpoint or a path (exit status 2)."""

    exit_code = EXIT_INPUT


class MissingFileError(InputError, FileNotFoundError):
    """A file or folder the input names does not exist (exit status 2)."""


def message_of(err: BaseException) -> str:
    """The user's message of ``err``. An error raised in a DataLoader worker reaches the main
    process as a new exception of its type whose text is PyTorch's "Caught X in DataLoader
    worker process N. Original Traceback ...": the original message is after the traceback's
    last ``X:`` line."""
    text = str(err)
    if "Original Traceback" in text:
        marker = f"{type(err).__name__}: "
        cut = text.rfind(marker)
        if cut >= 0:
            text = text[cut + len(marker) :]
    return text.strip()
