import os
import sys

from . import supervise

if not supervise.is_child() and os.environ.get("PARITY_SUPERVISE", "1") != "0":
    sys.exit(supervise.supervise(sys.argv[1:]))  # before the CLI's imports: the watcher stays light

from .cli import run

run()
