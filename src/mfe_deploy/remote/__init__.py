"""Remote hosts: environments whose target is ssh://user@host[:port]."""
