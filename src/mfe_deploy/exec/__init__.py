"""The execution layer: command lines as values, secrets, processes, hosts and their files.
Nothing here imports from the rest of mfe_deploy (errors aside)."""
