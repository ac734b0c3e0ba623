"""Ray Jobs: a ``bigsister`` command run on the cluster the job was submitted to.

``jobs/prepare.py``, ``jobs/train.py`` and ``jobs/evaluate.py`` call :func:`run_command` with their command's
name. The options, ``--help``, messages and exit codes are the command's own (:data:`bigsister_ray.cli.app`
parses the arguments and runs the command), so a job and the command line cannot differ. What differs is where
Ray is: on a workstation a command starts a local Ray unless ``ray.address`` is set; in a job the stages join
the cluster the job runs on, at ``ray.address`` from the settings or else ``auto`` (the cluster Ray's job
supervisor names in ``RAY_ADDRESS``). The stages connect with :func:`bigsister_ray.runtime.ensure_ray`, as they
do from the command line.
"""

from __future__ import annotations

import os
import sys

__all__ = ["run_command", "ADDRESS_ENV"]

#: The environment variable of ``ray.address`` (settings from a file or the command line take precedence over it).
ADDRESS_ENV = "BIGSISTER_RAY__ADDRESS"


def run_command(command: str, argv: list[str] | None = None) -> int:
    """Run ``bigsister COMMAND ARGV...`` (``argv`` defaults to this process's arguments) and return its exit code."""
    from bigsister_ray.cli import app

    args = list(sys.argv[1:] if argv is None else argv)
    before = os.environ.get(ADDRESS_ENV)
    os.environ.setdefault(ADDRESS_ENV, "auto")
    try:
        app(args=[command, *args], prog_name="bigsister")
    except SystemExit as done:
        code = done.code
        return code if isinstance(code, int) else (0 if code is None else 1)
    finally:
        if before is None:
            os.environ.pop(ADDRESS_ENV, None)
    return 0
