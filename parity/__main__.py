import sys

from . import supervise, watcher

if supervise.wanted():
    sys.exit(watcher.supervise(sys.argv[1:]))  # before the CLI's imports: the watcher stays light

from .cli import run

run()
