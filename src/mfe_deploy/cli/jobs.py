"""mfe-deploy jobs: the environment's scheduled jobs (`jobs:`), run now, on schedule, and their history."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from mfe_deploy.cli.app import EnvOption, JsonOption, Verbs, app, application, host
from mfe_deploy.cli.context import (
    DestOption,
    InstallOption,
    RuntimeOption,
    SecretsFileOption,
    audited,
    runtime,
    show_or_install,
    this_program,
)

if TYPE_CHECKING:
    from mfe_deploy.config.models import Environment, Job
    from mfe_deploy.exec.host import Host
    from mfe_deploy.ops.jobs import Run

jobs_app = typer.Typer(
    help="Scheduled jobs: one-off commands of a service's release, on a cron schedule.",
    rich_markup_mode=None,
    cls=Verbs,
)
app.add_typer(jobs_app, name="jobs")

JobArgument = Annotated[str, typer.Argument(metavar="NAME", help="A job of the environment's jobs:.")]


def _job(env: Environment, name: str) -> Job:
    from mfe_deploy.errors import MfeError

    if name not in env.jobs:
        known = ", ".join(env.jobs) or "none: add them under jobs:"
        raise MfeError(f"environments/{env.name}.yaml: jobs: no job named {name!r} (jobs: {known})")
    return env.jobs[name]


def _here(env: str) -> Host:
    """Jobs keep their history and locks beside the environment's state on this machine."""
    from mfe_deploy.errors import MfeError

    where = host(env)
    if where.remote:
        raise MfeError(f"{env} runs on {where.name}: jobs run on this machine's runtimes in this release")
    return where


def _history(where: Host) -> Path:
    return Path(where.state) / "jobs.jsonl"


def _runs(env: str) -> list[Run]:
    """The history, oldest first (a torn last line dropped)."""
    from mfe_deploy.ops import jobs as ops

    where = _here(env)
    return ops.parse_history(where.files.read_text(_history(where)) or "")


@jobs_app.command("list")
def list_(env: EnvOption, as_json: JsonOption = False) -> None:
    """The jobs, their schedules and their last outcome."""
    from mfe_deploy.ops import jobs as ops

    environment = application().environment(env).env
    last = ops.last_runs(_runs(env))
    rows: list[dict[str, Any]] = []
    for name, job in environment.jobs.items():
        run = last.get(name)
        rows.append(
            {
                "name": name,
                "service": job.service,
                "schedule": job.schedule,
                "timeout": job.timeout,
                "overlap": job.overlap,
                "command": list(job.command),
                "last": None if run is None else {"at": run.started_at, "outcome": run.outcome},
            }
        )
    console = application().console
    if as_json:
        console.json(rows)
        return
    console.table(
        ("job", "service", "schedule", "timeout", "overlap", "last run"),
        [(r["name"], r["service"], r["schedule"], r["timeout"], r["overlap"], _last(r["last"])) for r in rows],
        empty=f"{env} has no jobs: add them under jobs: in environments/{env}.yaml",
    )


def _last(last: dict[str, str] | None) -> str:
    return "never" if last is None else f"{last['outcome']} at {last['at']}"


@jobs_app.command("run")
def run(
    name: JobArgument,
    env: EnvOption,
    scheduled: Annotated[
        bool, typer.Option("--scheduled", help="Started by the schedule (recorded as such in the history).")
    ] = False,
    runtime_name: RuntimeOption = None,
) -> None:
    """Run a job now, as its schedule does: its command with the service's current release and variables,
    stopped past its timeout, skipped or queued while its last run still goes (its overlap). The outcome goes
    to the history; a failure or a timeout sends job.failed. The exit code is the command's."""
    import fcntl
    import time
    from datetime import UTC, datetime

    from mfe_deploy.errors import MfeError
    from mfe_deploy.exec.host import JOBS
    from mfe_deploy.ops import jobs as ops
    from mfe_deploy.runtimes.contract import OneOff, able

    state = application()
    environment = state.environment(env).env
    job = _job(environment, name)
    where = _here(env)
    where.files.makedirs(where.state, 0o700)
    locks = Path(where.state) / JOBS
    where.files.makedirs(locks, 0o700)
    console = state.console
    with open(locks / f"{name}.lock", "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | (fcntl.LOCK_NB if job.overlap == "skip" else 0))
        except BlockingIOError:
            now = datetime.now(UTC).isoformat(timespec="seconds")
            _record(where, ops.Run(name, now, 0.0, None, "skipped", scheduled))
            console.info(f"job {name}: its last run still goes; skipped (overlap: skip)")
            return
        limit = ops.timeout_seconds(job)
        started_at = datetime.now(UTC).isoformat(timespec="seconds")
        started = time.monotonic()
        try:
            rt = runtime(env, runtime_name)
            with audited(env, "job", {"job": name, "service": job.service, "scheduled": scheduled}) as audit:
                code = able(rt, OneOff).run(job.service, ops.timed(job), in_place=False)
                audit["exit_code"] = code
        except MfeError as exc:  # never started: a schedule's failure must still be seen (history, job.failed)
            seconds = time.monotonic() - started
            why = " ".join(exc.lines())
            done = ops.Run(name, started_at, round(seconds, 3), None, "not started", scheduled, why)
            _failed(env, job.service, done, limit)
            raise
        seconds = time.monotonic() - started
    done = ops.Run(name, started_at, round(seconds, 3), code, ops.outcome(code, seconds, limit), scheduled)
    if done.failed:
        _failed(env, job.service, done, limit)
    else:
        _record(where, done)
    raise typer.Exit(code)


def _failed(env: str, service: str, done: Run, limit: int) -> None:
    """A failed run: in the history, one line printed and job.failed sent."""
    from mfe_deploy.notify import Event
    from mfe_deploy.ops import jobs as ops

    state = application()
    _record(_here(env), done)
    summary = ops.summary(env, done, limit)
    state.console.info(summary)
    details = {"job": done.job, "service": service, "exit_code": done.exit_code, "seconds": done.seconds}
    if done.error is not None:
        details["error"] = done.error
    state.notify(env, Event("job.failed", env, summary, {**details, "outcome": done.outcome}))


def _record(where: Host, done: Run) -> None:
    """Append the run to the history (one writer at a time: two jobs may end together); past twice
    HISTORY_KEEP lines, keep the newest HISTORY_KEEP."""
    import fcntl

    from mfe_deploy.exec.host import JOBS
    from mfe_deploy.ops import jobs as ops

    path = _history(where)
    with open(Path(where.state) / JOBS / "history.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        text = where.files.read_text(path) or ""
        lines = [line for line in text.splitlines() if line.strip()]
        lines.append(done.to_json())
        if len(lines) > 2 * ops.HISTORY_KEEP:
            lines = lines[-ops.HISTORY_KEEP :]
        where.files.write_atomic(path, "\n".join(lines) + "\n", 0o600)


@jobs_app.command("history")
def history(
    env: EnvOption,
    name: Annotated[str | None, typer.Argument(metavar="[NAME]", help="One job's runs [default: all].")] = None,
    last: Annotated[int, typer.Option("--last", min=1, help="How many runs, newest last.")] = 20,
    as_json: JsonOption = False,
) -> None:
    """The jobs' past runs: when, how long, the exit code and the outcome."""
    from dataclasses import asdict

    environment = application().environment(env).env
    if name is not None:
        _job(environment, name)
    chosen = [r for r in _runs(env) if name is None or r.job == name][-last:]
    console = application().console
    if as_json:
        console.json([asdict(r) for r in chosen])
        return
    console.table(
        ("job", "started", "seconds", "exit", "outcome", "by"),
        [
            (
                r.job,
                r.started_at,
                f"{r.seconds:.1f}",
                "-" if r.exit_code is None else r.exit_code,
                r.outcome,
                "schedule" if r.scheduled else "hand",
            )
            for r in chosen
        ],
        empty="no runs yet",
    )


@jobs_app.command("schedule")
def schedule(
    env: EnvOption,
    systemd: Annotated[bool, typer.Option("--systemd", help="A systemd service and timer per job.")] = False,
    crontab: Annotated[
        bool, typer.Option("--crontab", help="Lines for a user's crontab (no user column), printed.")
    ] = False,
    install: InstallOption = False,
    dest: DestOption = None,
    env_file: SecretsFileOption = None,
) -> None:
    """Print (or install) what starts each job on its schedule: one /etc/cron.d file for the environment, or
    a systemd service and timer per job. Each run appends its output to state/jobs/NAME.log."""
    from mfe_deploy.errors import MfeError
    from mfe_deploy.exec.host import JOBS
    from mfe_deploy.ops import jobs as ops

    environment = application().environment(env).env
    if not environment.jobs:
        raise MfeError(f"environments/{env}.yaml: jobs: {env} has no jobs to schedule")
    if crontab and (systemd or install):
        raise typer.BadParameter("--crontab prints lines for `crontab -`: without --systemd or --install")
    where = _here(env)
    plan = ops.Schedule(
        env,
        application().project_dir,
        this_program(),
        environment.jobs,
        Path(where.state) / JOBS,
        env_file.resolve() if env_file else None,
    )
    try:
        files = plan.systemd() if systemd else {plan.name: plan.cron(user=None if crontab else "root")}
    except ValueError as exc:
        raise MfeError(f"environments/{env}.yaml: jobs: {exc}") from None
    where.files.makedirs(where.state, 0o700)
    where.files.makedirs(plan.log_dir, 0o700)
    if crontab:
        application().console.print(files[plan.name])
        return
    show_or_install(files, install=install, systemd=systemd, dest=dest)
