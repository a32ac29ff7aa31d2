"""`python -m prunenas.cli ...` is the `prunenas` command."""

import sys

from prunenas.cli import main

sys.exit(main())
