-- Rendered by mfe-deploy for the "development" environment (shared layout).
-- Run once by psql as the superuser on an empty cluster (docker-entrypoint-initdb.d, or the local
-- runtime). Passwords come from the environment through \getenv (psql 15+), never from this file.
-- Every service gets its own login role that can reach only its own schema.
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

REVOKE ALL ON DATABASE universal_mfe_dev FROM PUBLIC;
\connect universal_mfe_dev
REVOKE ALL ON SCHEMA public FROM PUBLIC;
GRANT CONNECT, TEMPORARY ON DATABASE universal_mfe_dev TO auth_app;
CREATE SCHEMA auth AUTHORIZATION auth_app;
ALTER ROLE auth_app IN DATABASE universal_mfe_dev SET search_path = auth;
GRANT CONNECT, TEMPORARY ON DATABASE universal_mfe_dev TO payments_app;
CREATE SCHEMA payments AUTHORIZATION payments_app;
ALTER ROLE payments_app IN DATABASE universal_mfe_dev SET search_path = payments;
GRANT CONNECT, TEMPORARY ON DATABASE universal_mfe_dev TO admin_app;
CREATE SCHEMA admin AUTHORIZATION admin_app;
ALTER ROLE admin_app IN DATABASE universal_mfe_dev SET search_path = admin;
GRANT CONNECT, TEMPORARY ON DATABASE universal_mfe_dev TO profile_app;
CREATE SCHEMA profile AUTHORIZATION profile_app;
ALTER ROLE profile_app IN DATABASE universal_mfe_dev SET search_path = profile;
