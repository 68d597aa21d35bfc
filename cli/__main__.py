"""`python -m cli`: the `rain-avatar` command."""

from cli import main

raise SystemExit(main())
