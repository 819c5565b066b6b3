#!/usr/bin/env bash
# The database roles of docs/deployment.md ("Database roles"), as devstack/postgres.py creates them
# locally. Run once by the postgres image on an empty data volume, as the superuser orch_admin
# (POSTGRES_USER); no Airflow component or task ever connects as orch_admin.
#
#   airflow       owner of the metadata database `airflow`
#   ratelimit     owner of `ratelimit` (the connectors' shared buckets)
#   audit_owner   NOLOGIN owner of `audit` and, through the airflow-init job, of its tables
#   audit_writer  INSERT + SELECT on the audit tables (tasks and components)
#   audit_reader  SELECT only (`audit trace`, `audit verify`)
#
# Passwords come from the environment (docker/.env) as psql variables, never on a command line.
set -euo pipefail

psql -v ON_ERROR_STOP=1 --no-psqlrc --username "$POSTGRES_USER" --dbname postgres \
  -v airflow_pw="${AIRFLOW_DB_PASSWORD:?}" \
  -v ratelimit_pw="${RATELIMIT_DB_PASSWORD:?}" \
  -v writer_pw="${AUDIT_WRITER_DB_PASSWORD:?}" \
  -v reader_pw="${AUDIT_READER_DB_PASSWORD:?}" <<'SQL'
SET password_encryption = 'scram-sha-256';
CREATE ROLE airflow LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS PASSWORD :'airflow_pw';
CREATE ROLE ratelimit LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS PASSWORD :'ratelimit_pw';
CREATE ROLE audit_owner NOLOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS;
CREATE ROLE audit_writer LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS PASSWORD :'writer_pw';
CREATE ROLE audit_reader LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS PASSWORD :'reader_pw';

CREATE DATABASE airflow OWNER airflow;
CREATE DATABASE ratelimit OWNER ratelimit;
CREATE DATABASE audit OWNER audit_owner;

-- Each role reaches its own database only (the owner keeps CONNECT; PUBLIC loses it).
REVOKE ALL ON DATABASE airflow FROM PUBLIC;
REVOKE ALL ON DATABASE ratelimit FROM PUBLIC;
REVOKE ALL ON DATABASE audit FROM PUBLIC;
GRANT CONNECT ON DATABASE audit TO audit_writer, audit_reader;
REVOKE ALL ON DATABASE postgres FROM PUBLIC;
REVOKE ALL ON DATABASE template1 FROM PUBLIC;
SQL
