"""mfe-deploy: deploy the universal MFE backend on docker, local processes, SSH hosts and swarm."""

__version__ = "0.1.0"
