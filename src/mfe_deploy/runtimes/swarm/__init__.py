"""The swarm runtime: the same environment as a Swarm stack (`docker stack deploy`) on one or more hosts.

Swarm does the rolling update (start-first, health-gated, rolled back by itself on failure); this
runtime builds the images here, sends each node's engine what it lacks, deploys the stores first, runs
the migrations once per release, deploys the rest and then watches every service until it converged or
Swarm rolled it back: `docker stack deploy` exits 0 either way, so the exit status comes from here."""

from collections.abc import Callable

from mfe_deploy.runtimes.contract import Deployment, Runtime, Stepwise
from mfe_deploy.runtimes.swarm.runtime import SwarmRuntime

RUNTIME: Callable[[Deployment], Runtime] = SwarmRuntime  # the type checker holds the class to the contract
UP: Callable[[Deployment], Stepwise] = SwarmRuntime  # and to how its `up` runs (app.up)

__all__ = ["RUNTIME", "SwarmRuntime"]
