"""``python -m tartok_tui.worker``: one worker subprocess (see worker/process.py)."""

import logging
import os
import sys

from tartok_tui.worker.process import main

if __name__ == "__main__":
    code = main()
    logging.shutdown()
    sys.stderr.flush()
    # os._exit, not sys.exit: the stdin reader thread is blocked in a read, and
    # interpreter shutdown with a daemon thread holding stdin's lock aborts the process.
    os._exit(code)
