"""What every entry script in ``src/`` shares: the repository root for the configs, Hydra's
``main`` over ``conf/``, and the exit statuses a job scheduler reads.

A script is then its docstring and a few lines (as in the lightning-hydra-template's
``src/train.py``)::

    @entry_point("train")
    def main(cfg: DictConfig) -> float | None:
        return train(cfg).get(cfg.get("optimized_metric"))

The decorated function stays in the script, so Hydra finds ``conf/`` beside the script and
names the job after it, as before; ``--cfg job``, ``-m`` (multirun) and sweepers work as with
``hydra.main`` itself (it is ``hydra.main``), and what the function returns reaches a sweeper.
"""

from __future__ import annotations

import functools
import inspect
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import hydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException, InstantiationException
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig

from seglab.config import register_resolvers
from seglab.config_schema import check_values
from seglab.errors import EXIT_INPUT, SeglabError, message_of
from seglab.quiet import silence_known_warnings

log = logging.getLogger(__name__)

# Exit statuses of a process killed by a signal (128 + the signal's number), as a shell and a
# job scheduler read them: a preempted or interrupted run must not look finished.
EXIT_SIGTERM = 128 + 15
EXIT_SIGINT = 128 + 2


def _expected(err: BaseException) -> SeglabError | None:
    """The ``SeglabError`` behind ``err``, if any (Hydra wraps a constructor's error)."""
    if isinstance(err, InstantiationException) and isinstance(err.__cause__, SeglabError):
        return err.__cause__
    return err if isinstance(err, SeglabError) else None


def exit_status(fn: Callable[..., Any]) -> Callable[..., Any]:
    """The config's values are checked first (``seglab.config_schema``). An expected failure
    (``seglab.errors``) is one message, on the terminal and in the
    run's log, and its exit status (2: bad input, 1: other); ``HYDRA_FULL_ERROR=1`` shows its
    traceback instead. Unexpected errors keep theirs (Hydra prints them).

    Lightning stops on SIGTERM with ``SIGTERMException``, a ``SystemExit`` without a code
    (exit status 0), so a preempted run would look finished to a job scheduler: exit like a
    process killed by SIGTERM instead (143), after ``InterruptCheckpoint`` saved.
    Likewise Ctrl+C (SIGINT) exits with 130, not Lightning's 1."""

    @functools.wraps(fn)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        try:
            if args and isinstance(args[0], DictConfig):
                check_values(args[0])  # every script's values, before anything is built
            return fn(*args, **kwargs)
        except Exception as err:
            expected = _expected(err)
            if expected is None or os.environ.get("HYDRA_FULL_ERROR") == "1":
                raise
            log.error("%s", message_of(expected))
            raise SystemExit(expected.exit_code) from None
        except SIGTERMException:
            raise SystemExit(EXIT_SIGTERM) from None
        except KeyboardInterrupt:  # outside fit / validate / test (e.g. building the data)
            raise SystemExit(EXIT_SIGINT) from None
        except SystemExit as err:
            # Lightning turns Ctrl+C (KeyboardInterrupt) into sys.exit(1), after
            # InterruptCheckpoint saved: exit like a process stopped by SIGINT.
            if err.code == 1 and isinstance(err.__context__, KeyboardInterrupt):
                raise SystemExit(EXIT_SIGINT) from None
            raise

    return wrapped


# Hydra's flags that take the next argument as their value.
_FLAGS_WITH_VALUE = {"--cfg", "-c", "--package", "-p", "--config-path", "-cp", "--config-name"}
_FLAGS_WITH_VALUE |= {"-cn", "--config-dir", "-cd", "--info", "--experimental-rerun"}


def check_overrides(argv: Sequence[str]) -> str | None:
    """Why Hydra cannot read one of the command line's overrides, with the fix (quoting),
    or None. Hydra's own message names the grammar but not the usual cause: a path with a
    space (which the shell splits into two arguments) or with non-ASCII letters, unquoted."""
    parser = OverridesParser.create()
    previous = ""
    for arg in argv:
        if arg.startswith("-") or previous in _FLAGS_WITH_VALUE:
            previous = arg
            continue
        try:
            parser.parse_overrides([arg])
        except HydraException as err:
            first = str(err).splitlines()[0]
            if "=" not in arg and "=" in previous:  # the shell split a value at a space
                example = f"""'{previous.split("=", 1)[0]}="{previous.split("=", 1)[1]} {arg}"'"""
            elif "=" in arg:
                key, value = arg.split("=", 1)
                example = f"""'{key}="{value}"'"""
            else:
                example = "key=value"
            return (
                f"cannot read the command-line override {arg!r} ({first}). Overrides are "
                "key=value; a value with spaces, non-ASCII letters or other special "
                "characters must be quoted for both the shell and Hydra, e.g. "
                f"{example} (docs/reliability.md)"
            )
        previous = arg
    return None


def entry_point(config_name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Makes a script's ``main(cfg)`` its command: ``conf/<config_name>.yaml`` composed with
        the command line by Hydra, ``SEGLAB_ROOT`` (read by ``conf/paths``) set to the repository
        the script is in unless already set, the overrides checked (``check_overrides``) and the
    exit statuses above."""

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        script = Path(inspect.getfile(fn)).resolve()
        os.environ.setdefault("SEGLAB_ROOT", str(script.parents[1]))
        register_resolvers()  # the run folder's name uses ${seglab.pid:}
        silence_known_warnings()
        # conf/ beside the script's folder, as an absolute path: found however the script
        # was loaded (as __main__ by python, or as a module by a test).
        conf = str(script.parents[1] / "conf")
        main = hydra.main(version_base="1.3", config_path=conf, config_name=config_name)(
            exit_status(fn)
        )

        @functools.wraps(main)
        def checked_main(*args: Any, **kwargs: Any) -> Any:
            problem = None if args or kwargs else check_overrides(sys.argv[1:])
            if problem:
                print(f"Error: {problem}", file=sys.stderr)
                raise SystemExit(EXIT_INPUT)
            return main(*args, **kwargs)

        return checked_main

    return decorate
