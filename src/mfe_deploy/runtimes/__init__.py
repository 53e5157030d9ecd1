"""Runtimes: one contract (contract.py), one module per runtime, picked by name (registry.py)."""
