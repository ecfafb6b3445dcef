"""Executors run a pass's tasks: see base.py for the contract."""
