"""Where native code's output goes: a JVM's start-up lines or TensorFlow's C++ messages, written to the
process's stderr (fd 2) past Python's ``sys.stderr``, kept out of the terminal and the notebooks."""

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def stderr_to(log: Path) -> Iterator[Path]:
    """This process's stderr (fd 2) goes to ``log`` inside the block. Errors still reach Python as exceptions."""
    log.parent.mkdir(parents=True, exist_ok=True)
    saved = os.dup(2)
    try:
        with open(log, "ab") as out:
            os.dup2(out.fileno(), 2)
            yield log
    finally:
        os.dup2(saved, 2)
        os.close(saved)
