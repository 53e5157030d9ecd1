-- Rendered by mfe-deploy for the "staging" environment (per-service layout).
-- Run once by psql as the superuser on an empty cluster (docker-entrypoint-initdb.d, or the local
-- runtime). Passwords come from the environment through \getenv (psql 15+), never from this file.
-- Every service gets its own login role that can reach only its own database.
\set ON_ERROR_STOP on
\getenv auth_password MFE_AUTH_DB_PASSWORD
CREATE ROLE auth_app LOGIN PASSWORD :'auth_password';
\getenv payments_password MFE_PAYMENTS_DB_PASSWORD
CREATE ROLE payments_app LOGIN PASSWORD :'payments_password';
\getenv admin_password MFE_ADMIN_DB_PASSWORD
CREATE ROLE admin_app LOGIN PASSWORD :'admin_password';
\getenv profile_password MFE_PROFILE_DB_PASSWORD
CREATE ROLE profile_app LOGIN PASSWORD :'profile_password';
-- A new role may connect to every database whose CONNECT PUBLIC holds: postgres and template1 too, where
-- it could list roles and databases and read pg_stat_activity. Only the superuser keeps them.
REVOKE CONNECT, TEMPORARY ON DATABASE postgres FROM PUBLIC;
REVOKE CONNECT, TEMPORARY ON DATABASE template1 FROM PUBLIC;

CREATE DATABASE auth_db OWNER auth_app;
REVOKE ALL ON DATABASE auth_db FROM PUBLIC;
GRANT CONNECT, TEMPORARY ON DATABASE auth_db TO auth_app;
\connect auth_db
REVOKE ALL ON SCHEMA public FROM PUBLIC;
ALTER SCHEMA public OWNER TO auth_app;

CREATE DATABASE payments_db OWNER payments_app;
REVOKE ALL ON DATABASE payments_db FROM PUBLIC;
GRANT CONNECT, TEMPORARY ON DATABASE payments_db TO payments_app;
\connect payments_db
REVOKE ALL ON SCHEMA public FROM PUBLIC;
ALTER SCHEMA public OWNER TO payments_app;

CREATE DATABASE admin_db OWNER admin_app;
REVOKE ALL ON DATABASE admin_db FROM PUBLIC;
GRANT CONNECT, TEMPORARY ON DATABASE admin_db TO admin_app;
\connect admin_db
REVOKE ALL ON SCHEMA public FROM PUBLIC;
ALTER SCHEMA public OWNER TO admin_app;

CREATE DATABASE profile_db OWNER profile_app;
REVOKE ALL ON DATABASE profile_db FROM PUBLIC;
GRANT CONNECT, TEMPORARY ON DATABASE profile_db TO profile_app;
\connect profile_db
REVOKE ALL ON SCHEMA public FROM PUBLIC;
ALTER SCHEMA public OWNER TO profile_app;
