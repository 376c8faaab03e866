"""What every `python -m ...` command shares: the exit codes, the one error type that carries one,
`run(main)`, and the common flags (--quiet, --workers, --device).

    0    success
    1    some inputs failed (each named on stderr with the reason); the others were processed
    2    unusable invocation or resources: bad options, a missing or incompatible model, data folder or
         output folder, an output folder in use, a full disk, out of memory
    130  interrupted (Ctrl-C); 141: the reader of stdout went away (`... | head`)

A command raises SpecVisionError (or a subclass) for anything the user can fix; its main is decorated
with `command`, which prints it as one `error: ...` line, without a traceback, and returns its code;
`run` exits with it. train imports this module; preprocess
never imports train.
"""
from __future__ import annotations

import argparse
import errno
import functools
import os
import sys

EXIT_OK, EXIT_INPUT_FAILED, EXIT_UNUSABLE = 0, 1, 2
EXIT_INTERRUPTED, EXIT_BROKEN_PIPE = 130, 141
DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


class SpecVisionError(Exception):
    """A problem the user can fix; the message names the file or option and the reason."""

    exit_code = EXIT_UNUSABLE

    def __init__(self, message: str, exit_code: int | None = None):
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code


def disk_full_message(err: OSError) -> str | None:
    """One line for ENOSPC/EDQUOT (naming the file when known); None for other errors."""
    if err.errno not in DISK_FULL:
        return None
    where = f" writing {err.filename}" if err.filename else ""
    return f"no space left on the device{where} ({err.strerror}); free some space and run again"


def run(main, argv: list[str] | None = None) -> None:
    """Run a command's `main(argv) -> exit code` and exit with it; user errors never show a traceback."""
    sys.exit(call(main, argv))


def command(main):
    """Decorator of a command's `main(argv) -> exit code`: the decorated main returns the exit code
    for errors too (SpecVisionError, Ctrl-C, out of memory, a full disk), printed as one line, so a
    command never prints `error:` itself and callers (tests, other commands) get the code."""
    @functools.wraps(main)
    def checked(argv: list[str] | None = None) -> int:
        return call(main, argv)
    return checked


def call(main, argv: list[str] | None = None) -> int:
    """`run` without the exit: the exit code a command gives, its errors printed as `run` prints them."""
    try:
        code = main(argv)
        sys.stdout.flush()  # a closed pipe shows here, inside the handler below
    except SpecVisionError as err:
        print(f"error: {err}", file=sys.stderr)
        code = err.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        code = EXIT_INTERRUPTED
    except BrokenPipeError:
        # `... | head`: the reader left; send what is still buffered nowhere, so exit is quiet
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        code = EXIT_BROKEN_PIPE
    except MemoryError:
        print("error: out of memory", file=sys.stderr)
        code = EXIT_UNUSABLE
    except OSError as err:
        message = disk_full_message(err)
        if message is None:
            raise
        print(f"error: {message}", file=sys.stderr)
        code = EXIT_UNUSABLE
    return code


# ---------------------------------------------------------------- shared flags

def available_cores() -> int:
    """Cores this process may use (a container or taskset may allow fewer than the machine has)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def add_quiet_flag(parser: argparse.ArgumentParser) -> None:
    """--quiet (alias --no-progress): no progress bars; sets args.quiet."""
    parser.add_argument("--quiet", "--no-progress", dest="quiet", action="store_true",
                        help="no progress bars")


def add_workers_flag(parser: argparse.ArgumentParser, what: str = "parallel processes") -> None:
    """--workers N for commands with a process pool; default: every core this process may use."""
    parser.add_argument("--workers", type=int, default=available_cores(), metavar="N",
                        help=f"{what} (default: all cores, %(default)s)")


def add_max_seconds_flag(parser: argparse.ArgumentParser, default: float) -> None:
    """--max-seconds S: audio whose header declares more is refused before decoding (args.max_seconds)."""
    parser.add_argument("--max-seconds", type=float, default=default, metavar="S",
                        help="refuse audio whose header declares more than this many seconds, before "
                             "decoding it (default: %(default)g)")


def check_workers(workers: int) -> None:
    if workers < 1:
        raise SpecVisionError("--workers must be at least 1")


def add_device_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                        help="auto: CUDA when available (default: %(default)s)")


def pick_device(name: str, index: int | None = None):
    """'auto' | 'cpu' | 'cuda' -> torch.device; 'cuda' without a GPU is an error (exit 2)."""
    import torch
    if name == "cuda" or (name == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise SpecVisionError("--device cuda: no CUDA GPU is available here (use --device cpu or auto)")
        return torch.device("cuda", index) if index is not None else torch.device("cuda")
    if name not in ("auto", "cpu"):
        raise SpecVisionError(f"--device {name!r}: expected auto, cpu or cuda")
    return torch.device("cpu")
