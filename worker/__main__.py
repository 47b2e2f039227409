import sys

from graphstore.worker.cli import main

sys.exit(main(sys.argv[1:]))
