"""The environment model: one validated, frozen value that every renderer and runtime reads."""

from __future__ import annotations

import re
import shlex
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from mfe_deploy.config.bundled import with_bundled_defaults
from mfe_deploy.exec.text import control_character

ServiceName = Annotated[str, Field(pattern=r"^[a-z][a-z0-9-]{0,30}[a-z0-9]$", description="a DNS label")]
Tier = Literal["development", "staging", "production"]
Port = Annotated[int, Field(ge=1, le=65535)]
ServicePort = Annotated[int, Field(ge=1024, le=65535, description="services run non-root")]
_DURATION = re.compile(r"[1-9][0-9]*[smhd]")


def _duration(value: str) -> str:
    if not _DURATION.fullmatch(value):
        raise ValueError("a duration is a whole number then s, m, h or d: 30s, 10m, 2h, 1d")
    return value


Duration = Annotated[str, AfterValidator(_duration)]


def seconds(duration: str) -> int:
    """A Duration's length in seconds."""
    return int(duration[:-1]) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[duration[-1]]


Memory = Annotated[str, Field(pattern=r"^[1-9][0-9]*[kmg]$")]
Image = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9._/:@-]*$", max_length=255)]
Identifier = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,62}$")]

# One field of a cron schedule: numbers, *, lists, ranges and steps; what cron and systemd's OnCalendar
# both read the same way (a schedule is written into a root crontab line: nothing else gets there).
CRON_FIELD = re.compile(r"(\*|\d+(-\d+)?)(/\d+)?(,(\d+(-\d+)?)(/\d+)?)*")
_REF = re.compile(r"^\$\{(?P<var>[A-Za-z_][A-Za-z0-9_]*)(?::-(?P<default>[^}]*))?\}$")


def cron_schedule(value: str) -> str:
    fields = value.split()
    if len(fields) != 5 or not all(CRON_FIELD.fullmatch(f) for f in fields):
        raise ValueError(
            "expected 5 cron fields (minute hour day month weekday), each of numbers, *, lists (1,5), "
            "ranges (1-5) and steps (*/15); no @ shortcuts or names"
        )
    return value


def _refuse_control_characters(value: Any, at: tuple[str | int, ...] = ()) -> None:
    """Every string of a field (dict keys and values, list items included) is refused when it holds a
    control character or a line separator: each may be rendered into a line-based file (env files,
    supervisord, nginx, cron, systemd units, compose). `at`: where inside the field, for the error's line."""
    if isinstance(value, str):
        found = control_character(value)
        if found is not None:
            message = "holds a control character or line separator ({found}), which no line-based file can carry"
            raise PydanticCustomError("control_character", message, {"found": found, "at": list(at)})
    elif isinstance(value, dict):
        for key, item in value.items():
            _refuse_control_characters(key, (*at, key))
            _refuse_control_characters(item, (*at, key))
    elif isinstance(value, tuple | list):
        for index, item in enumerate(value):
            _refuse_control_characters(item, (*at, index))


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    @field_validator("*", mode="after")
    @classmethod
    def _one_line(cls, value: Any) -> Any:
        _refuse_control_characters(value)  # nested models ran this on their own fields
        return value


_PROVIDED = re.compile(r"^(?P<provider>vault|sops):(?P<path>[A-Za-z0-9._/-]+)#(?P<key>[A-Za-z0-9._-]+)$")


class SecretRef(Model):
    """Where a secret comes from. The value itself never lives in the model."""

    env: str | None = None
    file: str | None = None
    default: str | None = None
    # vault:MOUNT/PATH#KEY (OpenBao or Vault, KV v2) or sops:FILE#KEY (a SOPS file, age keys)
    provider: Literal["vault", "sops"] | None = None
    path: str | None = None
    key: str | None = None

    def describe(self) -> str:
        if self.provider:
            return f"{self.provider}:{self.path}#{self.key}"
        return f"env:{self.env}" if self.env else f"file:{self.file}"


def _parse_ref(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    if value.startswith("file:") and len(value) > len("file:"):
        return {"file": value[len("file:") :]}
    provided = _PROVIDED.match(value)
    if provided:
        return {"provider": provided["provider"], "path": provided["path"], "key": provided["key"]}
    if value.startswith(("vault:", "sops:")):
        raise ValueError(f"a {value.split(':')[0]} reference is {value.split(':')[0]}:PATH#KEY")
    match = _REF.match(value)
    if match:
        return {"env": match["var"], "default": match["default"]}
    raise ValueError(
        "a secret must be a reference, ${VAR}, file:PATH, vault:MOUNT/PATH#KEY or sops:FILE#KEY, never a literal value"
    )


Ref = Annotated[SecretRef, BeforeValidator(_parse_ref)]


class Resources(Model):
    memory: Memory = "256m"
    cpus: float = Field(default=0.5, gt=0, le=64)
    pids: int = Field(default=256, ge=16, le=65536)


class Build(Model):
    """An image built from your own Dockerfile (paths relative to the project)."""

    context: str = Field(min_length=1)
    dockerfile: str = "Dockerfile"


class Routes(Model):
    prefix: str | None = Field(
        default=None, pattern=r"^/[A-Za-z0-9._~-]+(/[A-Za-z0-9._~-]+)*$", description="default: /api/<service>"
    )
    public: tuple[Annotated[str, Field(pattern=r"^(GET|HEAD|POST|PUT|PATCH|DELETE) /[A-Za-z0-9._~/-]*$")], ...] = Field(
        default=(), description="METHOD /path the gateway forwards without a token"
    )


class Migrations(Model):
    path: str = Field(min_length=1, description="a folder of NNN_name.sql files, relative to the project")


EnvName = Annotated[str, Field(pattern=r"^[A-Z][A-Z0-9_]{0,63}$")]


class Service(Model):
    kind: Literal["web", "worker"] = Field(
        default="web",
        description="worker: no HTTP, no port, no route; healthy while it touches $HEARTBEAT_FILE",
    )
    port: ServicePort | None = Field(default=None, description="web: the port it serves HTTP on (required)")
    replicas: int = Field(default=1, gt=0, le=32)
    resources: Resources = Resources()
    role: Literal["gateway", "service"] = Field(default="service", description="gateway: the one entry point")
    bundled: bool = Field(default=False, description="one of the five services mfe-deploy ships (mfe_services)")
    image: Image | None = Field(default=None, description="a prebuilt image, used as it is")
    build: Build | None = None
    command: tuple[str, ...] | None = Field(default=None, min_length=1, description="local runtime: the process")
    health: str = Field(default="/health", pattern=r"^/[A-Za-z0-9._~/-]*$")
    database: bool = Field(default=False, description="owns a database (or schema): role, migrations, backups")
    migrations: Migrations | None = None
    routes: Routes = Routes()
    env: dict[EnvName, str] = Field(default_factory=dict, description="plain values; secrets go in secrets:")
    depends_on: tuple[ServiceName, ...] = ()
    stop_timeout: Duration = Field(
        default="20s",
        description="SIGTERM to SIGKILL: a stopping container's time to drain (2 s of `Connection: close`) "
        "and finish its requests (docker's stop_grace_period, supervisord's stopwaitsecs)",
    )

    heartbeat: Duration = Field(
        default="30s", description="worker: healthy while $HEARTBEAT_FILE was touched less than this long ago"
    )
    singleton: bool = Field(
        default=False,
        description="worker: never two at once (a scheduler, a stream's only reader): replaced stop-first",
    )

    @model_validator(mode="after")
    def _kind(self) -> Service:
        if self.kind == "web" and self.port is None:
            raise ValueError("a web service needs its port (or `kind: worker` for one with no HTTP)")
        if self.kind == "worker":
            if self.port is not None:
                raise ValueError("a worker serves no HTTP: remove its port (or make it `kind: web`)")
            if self.role == "gateway":
                raise ValueError("the gateway serves HTTP: it cannot be a worker")
        elif self.singleton:
            raise ValueError("singleton is for workers: a web service is replaced start-first behind the gateway")
        return self

    @property
    def http_port(self) -> int:
        """The port of a web service (a worker has none: callers iterate Environment.web_services)."""
        assert self.port is not None, "a worker has no port"
        return self.port

    def container_probe(self) -> str:
        """The path the engine's healthcheck asks. The bundled gateway's /health sums up every service
        behind it: an engine that judged the gateway by it would restart (Swarm: roll back) a sound gateway
        whenever a service is briefly out of reach, so it is asked /health/live, its own process."""
        if self.role == "gateway" and self.bundled and self.health == "/health":
            return "/health/live"
        return self.health


class Pitr(Model):
    """Continuous WAL archiving with pgBackRest (local runtime): `restore --to-time T` brings the
    databases to any moment since the end of the oldest full backup kept."""

    archive_timeout: Duration = Field(
        default="30s", description="a WAL segment is archived at least this often: the recovery point's bound"
    )
    keep_full: int = Field(default=2, ge=1, le=100, description="pgBackRest full backups kept (`backup` takes one)")


class Database(Model):
    layout: Literal["shared", "per-service"]
    name: Identifier | None = Field(default=None, description="shared layout: the one database")
    port: Port = 5432
    superuser: Identifier = "postgres"
    resources: Resources = Resources(memory="512m", cpus=1.0, pids=512)
    pitr: Pitr | None = None
    tls: bool | None = Field(
        default=None,
        description="TLS between the services and PostgreSQL (sslmode=verify-full; plain TCP refused); "
        "default: on with the swarm runtime, whose overlays cross hosts in the clear",
    )


class Redis(Model):
    port: Port = 6379
    persistence: bool = False
    maxmemory: Memory | None = None
    resources: Resources = Resources(memory="256m", cpus=0.5, pids=128)


class RabbitMQ(Model):
    user: Identifier = "mfe"
    port: Port = 5672
    management_port: Port = 15672
    resources: Resources = Resources(memory="512m", cpus=1.0, pids=1024)


class Acme(Model):
    directory: str = Field(
        default="https://acme-v02.api.letsencrypt.org/directory",
        description="the ACME CA's directory URL (Let's Encrypt; its staging, or a test CA, for trials)",
    )
    email: str | None = Field(default=None, pattern=r"^[^@\s]+@[^@\s]+$", description="the account's contact")
    ca_bundle: str | None = Field(
        default=None, description="a CA file to trust for the ACME server itself (a private or test CA)"
    )
    renew_days: int = Field(default=30, ge=1, le=60, description="renew when fewer days than this are left")

    @field_validator("directory")
    @classmethod
    def _https(cls, value: str) -> str:
        if not value.startswith("https://") or any(c.isspace() for c in value) or len(value) <= len("https://"):
            raise ValueError("the ACME directory is an https:// URL (RFC 8555 asks for TLS)")
        return value


class Tls(Model):
    mode: Literal["self-signed", "files", "acme"] = "self-signed"
    certificate: str | None = None
    key: str | None = None
    acme: Acme = Acme()


class RateLimit(Model):
    rate: str = Field(default="100r/m", pattern=r"^[1-9][0-9]*r/[sm]$")
    burst: int = Field(default=20, ge=0, le=100000)
    zone_size: Memory = "10m"


class Nginx(Model):
    enabled: bool = False
    domain: str = Field(default="localhost", pattern=r"^[a-z0-9*]([a-z0-9.-]*[a-z0-9])?$")
    http_port: Port = 80
    https_port: Port = 443
    ipv6: bool = Field(
        default=True, description="listen on IPv6 too (in a container; the local runtime: loopback IPv4)"
    )
    tls: Tls = Tls()
    rate_limit: RateLimit = RateLimit()
    balance: Literal["least_conn", "round_robin", "ip_hash"] = "least_conn"
    keepalive: int = Field(default=32, ge=0, le=10000)
    hsts_max_age: int = Field(default=63072000, ge=0)
    hsts_include_subdomains: bool = Field(
        default=False, description="true: HSTS covers every subdomain of the domain too (check them all first)"
    )
    client_max_body_size: Memory = "1m"
    # An nginx reload (its own configuration changed): how long its old workers may go on with the
    # requests they hold (worker_shutdown_timeout).
    drain_timeout: Duration = "30s"
    resources: Resources = Resources(memory="128m", cpus=0.5, pids=128)


class Jwt(Model):
    expires_in: Duration = "15m"
    refresh_expires_in: Duration = "7d"
    issuer: ServiceName = Field(default="auth", description="the one service that signs access tokens")
    signing_key: str | None = Field(
        default=None, description="the kid of secrets.jwt_keys the issuer signs with (default: the first key)"
    )


class Images(Model):
    postgres: Image = "postgres:16"
    redis: Image = "redis:7-alpine"
    rabbitmq: Image = "rabbitmq:3-management-alpine"
    nginx: Image = "nginx:1.27"
    prometheus: Image = "prom/prometheus:v2.55.1"
    service_base: Image = "python:3.12-slim"
    services_prefix: Image = "universal-mfe"


class Offsite(Model):
    """An S3-compatible store every backup is copied to as it completes (its manifest last), and read back
    from on any machine: `backup list --offsite`, `backup verify --offsite`, `restore ID --from offsite`."""

    endpoint: str = Field(pattern=r"^https?://[A-Za-z0-9.\[\]:_-]+/?$", description="http(s)://host[:port]")
    bucket: str = Field(pattern=r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
    prefix: str = Field(default="", pattern=r"^([A-Za-z0-9._-]+/)*$", description="key prefix, ending in /")
    region: str = Field(default="us-east-1", pattern=r"^[a-z0-9-]{1,32}$")
    path_style: bool = Field(default=True, description="bucket in the path (most self-hosted stores)")
    access_key_id: Ref = Field(description="a secret reference")
    secret_access_key: Ref = Field(description="a secret reference")
    ca_file: str | None = Field(default=None, description="a CA bundle for an https endpoint, project-relative")
    part_size: Memory = Field(default="16m", description="multipart: files larger than this go in parts")


class Backup(Model):
    directory: str = "backups"
    offsite: Offsite | None = None
    keep: int = Field(default=7, ge=1, le=10000)
    max_age_days: int = Field(default=30, ge=1)
    schedule: str = "0 2 * * *"
    max_staleness_hours: float = Field(default=26, gt=0, description="backup check fails past this age")
    before_migrate: bool | None = Field(
        default=None,
        description="`up` backs up each database it is about to migrate (default: on outside development)",
    )

    @field_validator("schedule")
    @classmethod
    def _cron(cls, value: str) -> str:
        return cron_schedule(value)


def _words(value: Any) -> Any:
    """A command as one string is split as a shell would (quotes kept together), never run by one."""
    if isinstance(value, str):
        try:
            return tuple(shlex.split(value))
        except ValueError as exc:
            raise ValueError(f"cannot split {value!r} into words: {exc}") from None
    return value


class Job(Model):
    """A scheduled job: `command` run as a one-off with `service`'s current release and variables, on
    `schedule` (cron), killed past `timeout`; `overlap`: when the last run still goes, skip this one or
    queue behind it."""

    service: ServiceName = Field(description="whose release, variables and secrets the job runs with")
    command: Annotated[tuple[str, ...], BeforeValidator(_words)] = Field(
        min_length=1, description="a list, or one string split as a shell would (never run by one)"
    )
    schedule: str = Field(description="5 cron fields, in the host's time zone")
    timeout: Duration = Field(default="1h", description="TERM past it, KILL 10 s later; a job.failed")
    overlap: Literal["skip", "queue"] = Field(default="skip", description="when the last run still goes")

    @field_validator("schedule")
    @classmethod
    def _cron(cls, value: str) -> str:
        return cron_schedule(value)

    @field_validator("command")
    @classmethod
    def _program(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value or not value[0]:
            raise ValueError("the command's first word is the program to run")
        return value


class Logs(Model):
    """How much output each unit keeps: files of at most `max_size`, `max_files` of them, the oldest dropped
    (docker's json-file driver on docker and Swarm, supervisord's rotation on the local runtime)."""

    max_size: Memory = "10m"
    max_files: int = Field(default=3, ge=1, le=100)

    @property
    def supervisord_size(self) -> str:
        return self.max_size[:-1] + {"k": "KB", "m": "MB", "g": "GB"}[self.max_size[-1]]


class Monitoring(Model):
    """A Prometheus server in the stack scraping every service's /metrics (local runtime: Debian's binary)."""

    enabled: bool = False
    port: Port = 9090
    scrape_interval: Duration = "15s"
    retention: Duration = "15d"
    resources: Resources = Resources(memory="512m", cpus=0.5, pids=256)


class Ssh(Model):
    """How to reach a remote target (target: ssh://user@host[:port])."""

    identity_file: str | None = Field(default=None, description="a private key file; default: the agent")
    known_hosts: str | None = Field(default=None, description="default: ~/.ssh/known_hosts")
    remote_dir: str | None = Field(default=None, description="default: ~/mfe-deploy/<project>-<env>")
    connect_timeout: float = Field(default=10, gt=0, le=300)


class Rollout(Model):
    """How `up` replaces services on docker (start-first: new containers beside the old ones)."""

    parallel: int = Field(
        default=4,
        ge=1,
        le=8,
        description="services replaced side by side (each after those it depends on; the gateway alone and last): "
        "more is faster, and starts that many new containers at once on the host",
    )


class Swarm(Model):
    """runtime: swarm. The stack runs on a Docker Swarm whose manager's engine answers at `manager`."""

    manager: str = Field(
        default="unix:///var/run/docker.sock",
        pattern=r"^(unix|ssh|tcp)://\S+$",
        description="the manager's engine, as DOCKER_HOST takes it (unix://, ssh://user@host, tcp://)",
    )
    nodes: tuple[str, ...] = Field(
        default=(), description="the other nodes' engines: images are sent to each one that lacks them"
    )
    stores_label: str | None = Field(
        default=None,
        pattern=r"^[a-z][a-z0-9.-]{0,62}$",
        description="postgres, redis and rabbitmq run on the node with this label set to true (and their volumes "
        "stay there); default: on the manager",
    )
    endpoint_mode: Literal["dnsrr", "vip"] = Field(
        default="dnsrr", description="vip needs IPVS in the nodes' kernels; dnsrr works everywhere"
    )
    update_delay: Duration = Field(default="10s", description="between two replicas of one service (the guide's)")
    monitor: Duration = Field(default="10s", description="how long a new task must stay up before the next one")
    drain: Duration = Field(
        default="10s",
        description="how long a stopping task keeps accepting connections: Swarm takes it out of DNS 2 s before "
        "SIGTERM, and on a busy cluster the other nodes' DNS names it for seconds more (a service's stop_timeout "
        "must leave time after it)",
    )


NotifyEvent = Literal[
    "deploy.succeeded",
    "deploy.failed",
    "rollback.automatic",
    "rollback.succeeded",
    "rollback.failed",
    "restore.succeeded",
    "restore.failed",
    "backup.failed",
    "backup.stale",
    "lock.broken",
    "service.unhealthy",
    "service.recovered",
    "service.restarting",
    "job.failed",
    "test",
]


class Webhook(Model):
    url: Ref = Field(description="a secret reference: webhook URLs carry their token")
    format: Literal["slack", "json"] = "json"
    events: tuple[NotifyEvent, ...] = Field(default=(), description="empty: every event")


class Notify(Model):
    webhooks: tuple[Webhook, ...] = ()
    timeout: float = Field(default=5, gt=0, le=60, description="seconds per attempt")
    attempts: int = Field(default=3, ge=1, le=10)


class Secrets(Model):
    jwt_keys: tuple[Ref, ...] = Field(description="Ed25519 keys (mfe-deploy keys new): every one verifies, one signs")
    postgres_password: Ref
    databases: dict[ServiceName, Ref]
    rabbitmq_password: Ref | None = None
    redis_password: Ref | None = Field(default=None, description="set: Redis asks every client for it")
    sentry_dsn: Ref | None = None
    backup_passphrase: Ref | None = Field(default=None, description="set: every backup file is encrypted")


class Environment(Model):
    name: str
    tier: Tier
    project: str = Field(pattern=r"^[a-z][a-z0-9-]{0,40}$")
    target: str = Field(default="local", pattern=r"^(local|ssh://[A-Za-z0-9._-]+@[A-Za-z0-9.-]+(:[0-9]{1,5})?)$")
    runtime: Literal["auto", "docker", "local", "swarm"] = "auto"
    restart: Literal["no", "always", "on-failure", "unless-stopped"] = "no"
    publish_ports: bool = False
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    cors_origin: str = Field(pattern=r"^(\*|https?://[A-Za-z0-9.:-]+)$")
    event_hub: Literal["redis", "rabbitmq"]
    services: dict[ServiceName, Service]
    database: Database
    redis: Redis = Redis()
    rabbitmq: RabbitMQ = RabbitMQ()
    nginx: Nginx = Nginx()
    jwt: Jwt = Jwt()
    images: Images = Images()
    backup: Backup = Backup()
    ssh: Ssh = Ssh()
    notify: Notify = Notify()
    monitoring: Monitoring = Monitoring()
    swarm: Swarm = Swarm()
    rollout: Rollout = Rollout()
    logs: Logs = Logs()
    jobs: dict[ServiceName, Job] = Field(default={}, description="scheduled jobs by name")
    secrets: Secrets

    @model_validator(mode="before")
    @classmethod
    def _bundled(cls, data: Any) -> Any:
        return with_bundled_defaults(data)

    @property
    def uses_rabbitmq(self) -> bool:
        return self.event_hub == "rabbitmq"

    @property
    def stores(self) -> list[str]:
        """The stateful units, in start order: never replaced start-first, restarted only when asked."""
        return ["postgres", "redis", *(["rabbitmq"] if self.uses_rabbitmq else [])]

    @property
    def database_tls(self) -> bool:
        return self.database.tls if self.database.tls is not None else self.runtime == "swarm"

    @property
    def drain_seconds(self) -> int:
        """How long a stopping service keeps its listener open (DRAIN_SECONDS): the swarm's `drain` on a
        Swarm, whose nodes learn late that a task left DNS; 2 s on one host, whose DNS is at once."""
        return seconds(self.swarm.drain) if self.runtime == "swarm" else 2

    @property
    def gateway(self) -> str | None:
        """The service whose role is gateway (config checks: exactly one)."""
        return next((name for name, svc in self.services.items() if svc.role == "gateway"), None)

    @property
    def backs_up_before_migrate(self) -> bool:
        chosen = self.backup.before_migrate
        return self.tier != "development" if chosen is None else chosen

    @property
    def web_services(self) -> dict[str, Service]:
        """The services that serve HTTP: routed by the gateway, probed on their port."""
        return {name: svc for name, svc in self.services.items() if svc.kind == "web"}

    @property
    def database_services(self) -> list[str]:
        return [name for name, svc in self.services.items() if svc.database]

    @property
    def hub_services(self) -> list[str]:
        """The services that reach the event hub: all but the gateway."""
        return [name for name, svc in self.services.items() if svc.role != "gateway"]

    def route_prefix(self, service: str) -> str:
        return self.services[service].routes.prefix or f"/api/{service}"

    def database_name(self, service: str) -> str:
        if self.database.layout == "per-service":
            return f"{service}_db"
        return self.database.name or f"universal_mfe_{self.name}"

    @staticmethod
    def database_role(service: str) -> str:
        return f"{service}_app"
