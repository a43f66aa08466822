"""`python -m engines`: the same as the `engines` command.

See engines/cli.py for the subcommands.
"""
import sys

from engines.cli import main

sys.exit(main())
