"""`python -m minilm.cli ...` runs the same command-line tool as `minilm ...`."""

from . import main

raise SystemExit(main())
