"""`python -m minilm ...` runs the same command-line tool as `minilm ...`."""

from .cli import main

raise SystemExit(main())
