"""How text is refined: recipes, stages, the engine, the CLI and SQL over runs."""

__version__ = "0.1.0"
