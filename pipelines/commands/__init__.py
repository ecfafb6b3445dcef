"""Commands: the `refinery` CLI and what its subcommands run (sql, fetch, classifier, demo)."""
