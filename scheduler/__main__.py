import sys

from graphstore.cli import main

sys.exit(main(["scheduler", *sys.argv[1:]]))
