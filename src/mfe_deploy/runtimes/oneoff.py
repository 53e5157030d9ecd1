"""What one-off commands need: where a service's database is, as psql's arguments and a pgpass line (the
password never in an argv or an environment variable)."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

from mfe_deploy.errors import MfeError


@dataclass(frozen=True)
class PsqlTarget:
    host: str
    port: int
    user: str
    database: str
    password: str

    def args(self) -> list[str]:
        return ["-h", self.host, "-p", str(self.port), "-U", self.user, "-d", self.database]

    def pgpass_line(self) -> str:
        def field(value: str) -> str:  # pgpass escapes : and \ with a backslash
            return value.replace("\\", "\\\\").replace(":", "\\:")

        return ":".join(field(v) for v in (self.host, str(self.port), self.database, self.user, self.password)) + "\n"


def psql_target(database_url: str) -> PsqlTarget:
    """A service's DATABASE_URL (postgresql://user:password@host:port/database, quoted as render writes it)."""
    parts = urlsplit(database_url)
    if parts.scheme not in ("postgresql", "postgres") or not parts.hostname or not parts.username:
        raise MfeError("the service's DATABASE_URL is not a postgresql:// URL with a user and a host")
    return PsqlTarget(
        host=parts.hostname,
        port=parts.port or 5432,
        user=unquote(parts.username),
        database=unquote(parts.path.lstrip("/")) or unquote(parts.username),
        password=unquote(parts.password or ""),
    )
