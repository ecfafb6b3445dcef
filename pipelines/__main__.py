"""`python -m refinery.pipelines` is the `refinery` command (for environments without the console script)."""

from refinery.pipelines.commands.cli import main

raise SystemExit(main())
