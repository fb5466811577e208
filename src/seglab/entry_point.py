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
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import hydra
from lightning.pytorch.utilities.exceptions import SIGTERMException

from seglab.config import register_resolvers

# Exit statuses of a process killed by a signal (128 + the signal's number), as a shell and a
# job scheduler read them: a preempted or interrupted run must not look finished.
EXIT_SIGTERM = 128 + 15
EXIT_SIGINT = 128 + 2


def signal_exit_status(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Lightning stops on SIGTERM with ``SIGTERMException``, a ``SystemExit`` without a code
    (exit status 0), so a preempted run would look finished to a job scheduler: exit like a
    process killed by SIGTERM instead (143), after ``InterruptCheckpoint`` saved.
    Likewise Ctrl+C (SIGINT) exits with 130, not Lightning's 1."""

    @functools.wraps(fn)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
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


def entry_point(config_name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Makes a script's ``main(cfg)`` its command: ``conf/<config_name>.yaml`` composed with
    the command line by Hydra, ``SEGLAB_ROOT`` (read by ``conf/paths``) set to the repository
    the script is in unless already set, and the signal exit statuses above."""

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        script = Path(inspect.getfile(fn)).resolve()
        os.environ.setdefault("SEGLAB_ROOT", str(script.parents[1]))
        register_resolvers()  # the run folder's name uses ${seglab.pid:}
        # Relative to the script (Hydra looks through the wrapper to ``fn``'s file).
        return hydra.main(version_base="1.3", config_path="../conf", config_name=config_name)(
            signal_exit_status(fn)
        )

    return decorate
