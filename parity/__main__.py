import sys

from . import supervise

if supervise.wanted():
    sys.exit(supervise.supervise(sys.argv[1:]))  # before the CLI's imports: the watcher stays light

from .cli import run

run()
