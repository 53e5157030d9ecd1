"""The bad-input table: (id, environment, text to replace, replacement, command-line extras, environ changes).

Kept apart from the test so that the expected messages sit next to the mutation that causes them.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Case:
    id: str
    env: str
    old: str
    new: str
    expected: list[str]
    environ: dict[str, str | None] = field(default_factory=dict)
    whole: str | None = None  # replaces the whole file


# 1.5 KB that expands to 9**9 (387 million) values: refused after the first 20000.
ALIAS_BOMB = "extends: _base\n" + "".join(
    f"{name}: &{name} [{', '.join([f'*{prev}' if prev else repr('x')] * 9)}]\n"
    for name, prev in zip("abcdefghi", ["", *"abcdefgh"], strict=True)
)

CASES = [
    Case(
        "yaml-unclosed-flow",
        "staging",
        "tls: {mode: self-signed}",
        "tls: {mode: self-signed",
        [
            "environments/staging.yaml:17: YAML syntax error: while parsing a flow mapping (started on line 15) did not find expected ',' or '}'",
        ],
    ),
    Case(
        "yaml-bad-indent",
        "staging",
        "  layout: per-service",
        "  layout: per-service\n    oops: 1",
        [
            "environments/staging.yaml:11: YAML syntax error: mapping values are not allowed in this context",
        ],
    ),
    Case(
        "yaml-tab",
        "development",
        "  name: universal_mfe_dev",
        "\tname: universal_mfe_dev",
        [
            "environments/development.yaml:12: YAML syntax error: while scanning a plain scalar (started on line 11) found a tab character that violates indentation",
        ],
    ),
    Case(
        "duplicate-key",
        "staging",
        "event_hub: rabbitmq",
        "event_hub: rabbitmq\nevent_hub: redis",
        [
            "environments/staging.yaml:8: event_hub: duplicate key (first set on line 7)",
        ],
    ),
    Case(
        "file-is-a-list",
        "staging",
        "",
        "",
        [
            "environments/staging.yaml:1: expected a mapping of settings at the top level, got a list",
        ],
        whole="- tier: staging\n- event_hub: redis\n",
    ),
    Case(
        "file-is-a-string",
        "staging",
        "",
        "",
        [
            "environments/staging.yaml:1: expected a mapping of settings at the top level, got a string",
        ],
        whole="just words\n",
    ),
    Case(
        "replicas-zero",
        "production",
        "    replicas: 2",
        "    replicas: 0",
        [
            "environments/production.yaml:12: services.api-gateway.replicas: Input should be greater than 0 (got 0)",
        ],
    ),
    Case(
        "replicas-wrong-type",
        "production",
        "    replicas: 2",
        "    replicas: two",
        [
            "environments/production.yaml:12: services.api-gateway.replicas: Input should be a valid integer, unable to parse string as an integer (got 'two')",
        ],
    ),
    Case(
        "replicas-too-many",
        "production",
        "    replicas: 2",
        "    replicas: 500",
        [
            "environments/production.yaml:12: services.api-gateway.replicas: Input should be less than or equal to 32 (got 500)",
        ],
    ),
    Case(
        "port-out-of-range",
        "staging",
        "tier: staging",
        "tier: staging\nservices:\n  auth:\n    port: 70000",
        [
            "environments/staging.yaml:6: services.auth.port: Input should be less than or equal to 65535 (got 70000)",
        ],
    ),
    Case(
        "port-privileged",
        "staging",
        "tier: staging",
        "tier: staging\nservices:\n  auth:\n    port: 80",
        [
            "environments/staging.yaml:6: services.auth.port: Input should be greater than or equal to 1024 (got 80)",
        ],
    ),
    Case(
        "port-duplicate",
        "staging",
        "tier: staging",
        "tier: staging\nservices:\n  payments:\n    port: 3001",
        [
            "environments/staging.yaml:6: services.payments.port: port 3001 is already used by services.auth.port",
        ],
    ),
    Case(
        "port-clashes-with-infra",
        "development",
        "publish_ports: true",
        "publish_ports: true\nredis:\n  port: 3000",
        [
            "environments/development.yaml:8: redis.port: port 3000 is already used by services.api-gateway.port",
        ],
    ),
    Case(
        "unknown-key-top",
        "staging",
        "restart: unless-stopped",
        "restart: unless-stopped\nreplica: 2",
        [
            "environments/staging.yaml:6: replica: unknown key (not part of the environment model) (got 2)",
        ],
    ),
    Case(
        "unknown-key-near-one",  # issue 34: `replica:` in a service said nothing of `replicas`
        "production",
        "    replicas: 2",
        "    replica: 2",
        [
            "environments/production.yaml:12: services.api-gateway.replica: unknown key (not part of the environment model); did you mean 'replicas'? (got 2)",
        ],
    ),
    Case(
        "unknown-key-depth-3",
        "production",
        "    replicas: 2",
        "    replicas: 2\n    memory: 1g",
        [
            "environments/production.yaml:13: services.api-gateway.memory: unknown key (not part of the environment model) (got '1g')",
        ],
    ),
    Case(
        "unknown-key-depth-4",
        "production",
        "  auth:\n    resources: {memory: 384m",
        "  auth:\n    resources: {memroy: 384m",
        [
            "environments/production.yaml:14: services.auth.resources.memroy: unknown key (not part of the environment model); did you mean 'memory'? (got '384m')",
        ],
    ),
    Case(
        "unknown-service",
        "staging",
        "tier: staging",
        "tier: staging\nservices:\n  billing:\n    port: 3009",
        [
            "environments/staging.yaml:5: services.billing: missing: image (a prebuilt image) or build (a Dockerfile of yours)",
        ],
    ),
    Case(
        "service-name-not-dns",
        "staging",
        "tier: staging",
        "tier: staging\nservices:\n  Billing_2:\n    port: 3009\n    image: x:1",
        [
            "environments/staging.yaml:5: services.Billing_2: unknown name 'Billing_2': String should match pattern '^[a-z][a-z0-9-]{0,30}[a-z0-9]$'",
        ],
    ),
    Case(
        "two-gateways",
        "staging",
        "tier: staging",
        "tier: staging\nservices:\n  edge:\n    port: 3009\n    image: x:1\n    role: gateway",
        [
            "environments/staging.yaml:8: services.edge.role: only one gateway: api-gateway is one already",
        ],
    ),
    Case(
        "service-own-problems",
        "staging",
        "tier: staging",
        "tier: staging\nservices:\n  billing:\n    port: 3009\n    build: {context: billing}\n"
        "    migrations: {path: billing/migrations}\n    depends_on: [ledger]\n    env: {PORT: '1', STOP_TIMEOUT: '5'}\n"
        "    routes: {prefix: /api/auth}",
        [
            "environments/staging.yaml:8: services.billing.migrations: migrations need a database: set database: true",
            "environments/staging.yaml:9: services.billing.depends_on: 'ledger' is not another service of this environment",
            "environments/staging.yaml:10: services.billing.env.PORT: set by mfe-deploy itself; choose another name",
            "environments/staging.yaml:10: services.billing.env.STOP_TIMEOUT: set by mfe-deploy itself; choose another name",
            "environments/staging.yaml:11: services.billing.routes.prefix: /api/auth is already routed to auth",
        ],
    ),
    Case(
        "database-without-secret",
        "staging",
        "tier: staging",
        "tier: staging\nservices:\n  billing:\n    port: 3009\n    image: x:1\n    database: true",
        [
            "environments/staging.yaml:27: secrets.databases.billing: missing: every service database needs a password reference",
        ],
    ),
    Case(
        "bad-literal",
        "staging",
        "event_hub: rabbitmq",
        "event_hub: kafka",
        [
            "environments/staging.yaml:7: event_hub: Input should be 'redis' or 'rabbitmq' (got 'kafka')",
        ],
    ),
    Case(
        "missing-required",
        "staging",
        "tier: staging\n",
        "",
        [
            "environments/staging.yaml:2: tier: required key is missing",
        ],
    ),
    Case(
        "bad-memory",
        "production",
        "  maxmemory: 512m",
        "  maxmemory: lots",
        [
            "environments/production.yaml:22: redis.maxmemory: String should match pattern '^[1-9][0-9]*[kmg]$' (got 'lots')",
        ],
    ),
    Case(
        "port-clash-with-a-default",  # issue 34: blamed on staging.yaml:2 (extends: _base), where no port is
        "staging",
        "tier: staging",
        "tier: staging\nservices:\n  auth: {port: 6379}",
        [
            "environments/staging.yaml:5: services.auth.port: port 6379 is already used by redis.port (its default)",
        ],
    ),
    Case(
        "issuer-is-the-gateway",  # issue 34: it said "'api-gateway' is not a service of this environment"
        "staging",
        "tier: staging",
        "tier: staging\njwt:\n  issuer: api-gateway",
        [
            "environments/staging.yaml:5: jwt.issuer: 'api-gateway' is the gateway, which verifies tokens and never signs them: the issuer is a service that logs users in (default: auth, the bundled one)",
        ],
    ),
    Case(
        "issuer-unknown",
        "staging",
        "tier: staging",
        "tier: staging\njwt:\n  issuer: auht",
        [
            "environments/staging.yaml:5: jwt.issuer: 'auht' is not a service of this environment: the issuer signs the access tokens (default: auth, the bundled one); one of auth, payments, admin, profile",
        ],
    ),
    Case(
        "bad-cron",
        "staging",
        "tier: staging",
        "tier: staging\nbackup:\n  schedule: '0 2 * *'",
        [
            "environments/staging.yaml:5: backup.schedule: expected 5 cron fields (minute hour day month weekday), each of numbers, *, lists (1,5), ranges (1-5) and steps (*/15); no @ shortcuts or names (got '0 2 * *')",
        ],
    ),
    Case(
        "job-unknown-service",
        "staging",
        "tier: staging",
        "tier: staging\njobs:\n  report:\n    service: reports\n    command: python -m report\n    schedule: '0 3 * * *'",
        [
            "environments/staging.yaml:6: jobs.report.service: 'reports' is not a service of this environment (api-gateway, auth, payments, admin, profile)",
        ],
    ),
    Case(
        "job-bad-schedule-and-timeout",
        "staging",
        "tier: staging",
        "tier: staging\njobs:\n  report:\n    service: admin\n    command: [report]\n    schedule: '@daily'\n    timeout: 5 minutes",
        [
            "environments/staging.yaml:8: jobs.report.schedule: expected 5 cron fields (minute hour day month weekday), each of numbers, *, lists (1,5), ranges (1-5) and steps (*/15); no @ shortcuts or names (got '@daily')",
            "environments/staging.yaml:9: jobs.report.timeout: a duration is a whole number then s, m, h or d: 30s, 10m, 2h, 1d (got '5 minutes')",
        ],
    ),
    Case(
        "job-unclosed-quote",
        "staging",
        "tier: staging",
        "tier: staging\njobs:\n  report:\n    service: admin\n    command: \"sh -c 'echo\"\n    schedule: '0 3 * * *'",
        [
            'environments/staging.yaml:7: jobs.report.command: cannot split "sh -c \'echo" into words: No closing quotation (got "sh -c \'echo")',
        ],
    ),
    Case(
        "name-key",
        "staging",
        "tier: staging",
        "tier: staging\nname: other",
        [
            "environments/staging.yaml:4: name: the name comes from the file name; remove this key",
        ],
    ),
    Case(
        "extends-missing",
        "staging",
        "extends: _base",
        "extends: _nothing",
        [
            "environments/staging.yaml:2: extends: no file environments/_nothing.yaml to extend",
        ],
    ),
    Case(
        "extends-cycle",
        "staging",
        "extends: _base",
        "extends: staging",
        [
            "environments/staging.yaml: extends: circular extends: staging -> staging",
        ],
    ),
    Case(
        "publish-ports-staging",
        "staging",
        "tier: staging",
        "tier: staging\npublish_ports: true",
        [
            "environments/staging.yaml:4: publish_ports: ports are published only in development, not in staging",
        ],
    ),
    Case(
        "rabbitmq-without-password",
        "staging",
        "  rabbitmq_password: ${STAGING_RABBITMQ_PASSWORD}\n",
        "",
        [
            "environments/staging.yaml:17: secrets.rabbitmq_password: missing: event_hub is rabbitmq",
        ],
    ),
    Case(
        "rabbitmq-user-is-a-service",
        "staging",
        "event_hub: rabbitmq",
        "event_hub: rabbitmq\nrabbitmq:\n  user: payments",
        [
            "environments/staging.yaml:9: rabbitmq.user: 'payments' is the name of a service's own RabbitMQ user; choose another",
        ],
    ),
    Case(
        "nginx-alpine-image",
        "staging",
        "  tls: {mode: self-signed}",
        "  tls: {mode: self-signed}\nimages: {nginx: 'nginx:1.27-alpine'}",
        [
            "environments/staging.yaml:16: images.nginx: nginx:1.27-alpine: nginx runs unprivileged through setpriv, which the -alpine images lack; use a Debian-based tag (nginx:1.27)",
        ],
    ),
    Case(
        "acme-for-a-wildcard",
        "staging",
        "  domain: staging-api.example.com\n  tls: {mode: self-signed}",
        "  domain: '*.example.com'\n  tls: {mode: acme}",
        [
            "environments/staging.yaml:15: nginx.tls.mode: acme answers http-01 challenges, which cannot prove a wildcard name",
        ],
    ),
    Case(
        "acme-directory-not-https",
        "staging",
        "  tls: {mode: self-signed}",
        "  tls: {mode: acme, acme: {directory: 'http://ca.example.com/dir'}}",
        [
            "environments/staging.yaml:15: nginx.tls.acme.directory: the ACME directory is an https:// URL (RFC 8555 asks for TLS) (got 'http://ca.example.com/dir')",
        ],
    ),
    Case(
        "tls-files-without-key",
        "production",
        "    key: /etc/ssl/mfe/api.example.com.key\n",
        "",
        [
            "environments/production.yaml:28: nginx.tls.key: missing: tls mode 'files' needs a certificate and a key",
        ],
    ),
    Case(
        "production-redis-not-persistent",
        "production",
        "  persistence: true",
        "  persistence: false",
        [
            "environments/production.yaml:21: redis.persistence: production keeps Redis data: set persistence: true",
        ],
    ),
    Case(
        "secret-literal",
        "staging",
        "${STAGING_JWT_KEY}",
        "my-literal-jwt-key-that-is-long-enough",
        [
            "environments/staging.yaml:18: secrets.jwt_keys[0]: a secret must be a reference, ${VAR}, file:PATH, vault:MOUNT/PATH#KEY or sops:FILE#KEY, never a literal value",
        ],
    ),
    Case(
        "secret-missing",
        "staging",
        "",
        "",
        [
            "environments/staging.yaml:19: secrets.postgres_password: environment variable STAGING_POSTGRES_PASSWORD is not set: export it where mfe-deploy runs (in CI, a secret variable)",
        ],
        environ={"STAGING_POSTGRES_PASSWORD": None},
    ),
    Case(
        "secret-empty",
        "production",
        "",
        "",
        [
            "environments/production.yaml:34: secrets.jwt_keys[0]: environment variable PRODUCTION_JWT_KEY is not set: export it where mfe-deploy runs (in CI, a secret variable)",
        ],
        environ={"PRODUCTION_JWT_KEY": ""},
    ),
    Case(
        "secret-jwt-key-not-a-key",
        "staging",
        "",
        "",
        [
            "environments/staging.yaml:18: secrets.jwt_keys[0]: not a signing key: expected <kid>:<base64url of a 32-byte Ed25519 key>, as `mfe-deploy keys new` writes it",
        ],
        environ={"STAGING_JWT_KEY": "short-but-not-default"},
    ),
    Case(
        "secret-jwt-key-short",
        "staging",
        "",
        "",
        [
            "environments/staging.yaml:18: secrets.jwt_keys[0]: the key of k2 is 27 bytes, not 32: expected <kid>:<base64url of a 32-byte Ed25519 key>, as `mfe-deploy keys new` writes it",
        ],
        environ={"STAGING_JWT_KEY": "k2:c2hvcnQtYnV0LW5vdC1kZWZhdWx0LWtleS0x"},
    ),
    Case(
        "jwt-signing-key-unknown",
        "staging",
        "\nsecrets:\n",
        "\njwt:\n  signing_key: k9\nsecrets:\n",
        [
            "environments/staging.yaml:18: jwt.signing_key: no key of secrets.jwt_keys is named k9",
        ],
    ),
    Case(
        "secret-known-default",
        "production",
        "",
        "",
        [
            "environments/production.yaml:35: secrets.postgres_password: the value is a well-known default, refused in production",
        ],
        environ={"PRODUCTION_POSTGRES_PASSWORD": "postgres"},
    ),
    Case(
        "secret-dev-jwt-default",
        "staging",
        "",
        "",
        [
            "environments/staging.yaml:18: secrets.jwt_keys[0]: the documented development key, refused in staging",
        ],
        environ={"STAGING_JWT_KEY": "development:s--PI040JSlDeR47WkVqM794oXAQH6eLFDSrSGrMOVQ"},
    ),
    Case(
        "secret-default-in-staging",
        "staging",
        "${STAGING_JWT_KEY}",
        "${STAGING_JWT_KEY:-fallback}",
        [
            "environments/staging.yaml:18: secrets.jwt_keys[0]: ${STAGING_JWT_KEY:-...}: defaults are not allowed outside development",
        ],
    ),
    Case(
        "secret-file-missing",
        "staging",
        "${STAGING_ADMIN_DB_PASSWORD}",
        "file:/nonexistent/admin",
        [
            "environments/staging.yaml:25: secrets.databases.admin: cannot read secret file /nonexistent/admin: No such file or directory",
        ],
    ),
    Case(
        "secret-with-quote",
        "staging",
        "",
        "",
        [
            "environments/staging.yaml:23: secrets.databases.auth: the value contains a single quote, which env files cannot carry safely",
        ],
        environ={"STAGING_AUTH_DB_PASSWORD": "it's-a-long-enough-password-1234"},
    ),
    Case(
        "secret-with-carriage-return",  # review finding 3: a \r ended the line for text-mode readers
        "staging",
        "",
        "",
        [
            "environments/staging.yaml:23: secrets.databases.auth: the value holds a control character or line separator (\\r), which env files cannot carry",
        ],
        environ={"STAGING_AUTH_DB_PASSWORD": "a-long-enough-password-1234\rJWT_PUBLIC_KEYS=evil"},
    ),
    Case(
        "huge-integer",
        "staging",
        "event_hub: rabbitmq",
        "event_hub: rabbitmq\nredis:\n  port: " + "9" * 5000,
        [
            "environments/staging.yaml:9: redis.port: a number of more than 30 digits",
        ],
    ),
    Case(
        "yaml-alias-bomb",
        "staging",
        "",
        "",
        [
            "environments/staging.yaml:2: e[1][5][2][2][8]: more than 20000 values once its aliases are expanded (a YAML alias bomb?)",
        ],
        whole=ALIAS_BOMB,
    ),
    Case(
        "extends-outside-environments",
        "staging",
        "extends: _base",
        "extends: ../../etc/elsewhere",
        [
            "environments/staging.yaml:2: extends: '../../etc/elsewhere': the name of another file in environments/ (no folders, no ..)",
        ],
    ),
    Case(
        "sentry-dsn-not-a-dsn",
        "staging",
        "",
        "",
        [
            "environments/staging.yaml:21: secrets.sentry_dsn: a Sentry DSN looks like https://<public key>@<host>/<project id>",
        ],
        environ={"STAGING_SENTRY_DSN": "not-a-dsn-but-long-enough-1234567"},
    ),
    Case(
        "several-secrets-at-once",
        "staging",
        "",
        "",
        [
            "environments/staging.yaml:18: secrets.jwt_keys[0]: environment variable STAGING_JWT_KEY is not set: export it where mfe-deploy runs (in CI, a secret variable)",
            "environments/staging.yaml:25: secrets.databases.admin: the value is a well-known default, refused in staging",
        ],
        environ={"STAGING_JWT_KEY": None, "STAGING_ADMIN_DB_PASSWORD": "admin"},
    ),
]
