"""The engine: a recipe planned into tasks and passes, run by an executor, resumed, counted."""
