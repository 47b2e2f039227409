import sys

from graphstore.scheduler.cli import main

sys.exit(main(sys.argv[1:]))
