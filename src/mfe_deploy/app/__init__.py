"""Use cases: what a command does, step by step, over the runtime's primitives. Above the runtimes (they
never import this package), below the CLI (which parses, prints and audits)."""
