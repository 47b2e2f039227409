import sys

from graphstore.cli import main

sys.exit(main(["worker", *sys.argv[1:]]))
