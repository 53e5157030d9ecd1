"""Backups: checksummed dumps, verified by real restores, restored in one step that cannot make things worse."""
