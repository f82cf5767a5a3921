#!/usr/bin/env bash
# Local PostgreSQL from Debian's packages, for tests and benchmarks.
#
#   deploy/local/postgres.sh start|stop|restart|status|dsn
#
#   start    install postgresql with apt-get when missing, create the cluster when none,
#            start it on 127.0.0.1:5432, make sure max_connections >= EXACTLY_PG_MAX_CONNECTIONS,
#            create role and database "exactly" (password "exactly"), wait until ready.
#            Idempotent: a second start only checks.
#   stop     fast shutdown (pg_ctlcluster -m fast).
#   restart  fast shutdown + start; data is kept.
#   status   exit 0 when the cluster is online and accepts the DSN, 3 otherwise.
#   dsn      print the DSN.
#
# Environment (all optional):
#   EXACTLY_PG_MAX_CONNECTIONS  minimum max_connections, default 200 (tests run in parallel)
#   EXACTLY_PG_READY_TIMEOUT    seconds to wait for readiness, default 60
#
# DSN: postgres://exactly:exactly@127.0.0.1:5432/exactly?sslmode=disable
# The role is SUPERUSER: tests use pg_terminate_backend. synchronous_commit stays on.
# Logs: the cluster's log file, shown by `pg_lsclusters` (/var/log/postgresql/postgresql-<ver>-main.log).
set -euo pipefail

PG_USER=exactly
PG_PASSWORD=exactly
PG_DB=exactly
HOST=127.0.0.1
PORT=5432
CLUSTER=main
DSN="postgres://$PG_USER:$PG_PASSWORD@$HOST:$PORT/$PG_DB?sslmode=disable"
MAX_CONN="${EXACTLY_PG_MAX_CONNECTIONS:-200}"
READY_TIMEOUT="${EXACTLY_PG_READY_TIMEOUT:-60}"

log() { printf '[postgres] %s\n' "$*" >&2; }
die() { printf '[postgres] ERROR: %s\n' "$*" >&2; exit 1; }

# Admin SQL over the local socket with peer authentication, as the postgres OS user.
# cd / first: postgres may not be allowed into the caller's working directory.
as_postgres() { (cd / && runuser -u postgres -- "$@"); }
psql_admin() { as_postgres psql -X -q -v ON_ERROR_STOP=1 -p "$PORT" -d postgres "$@"; }

server_installed() {
	command -v pg_ctlcluster >/dev/null 2>&1 && command -v pg_lsclusters >/dev/null 2>&1 &&
		command -v psql >/dev/null 2>&1 && compgen -G '/usr/lib/postgresql/*/bin/postgres' >/dev/null
}

ensure_installed() {
	server_installed && return 0
	[ "$(id -u)" = 0 ] || die "PostgreSQL is not installed; run as root or: apt-get install -y postgresql"
	log "PostgreSQL missing: installing it with apt-get"
	local t0=$SECONDS
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq postgresql >/dev/null
	server_installed || die "apt-get install postgresql did not provide the server binaries"
	log "installed in $((SECONDS - t0))s"
}

# Highest installed server version, e.g. 15.
installed_version() {
	local v
	v="$(find /usr/lib/postgresql -mindepth 3 -maxdepth 3 -path '*/bin/postgres' 2>/dev/null |
		awk -F/ '{print $5}' | sort -n | tail -n1)"
	[ -n "$v" ] || die "no server binaries under /usr/lib/postgresql"
	echo "$v"
}

# Version of the cluster named main whose server is installed (highest first); empty when none.
cluster_version() {
	pg_lsclusters -h 2>/dev/null | awk -v c="$CLUSTER" '$2 == c {print $1}' | sort -rn |
		while read -r v; do
			if [ -x "/usr/lib/postgresql/$v/bin/postgres" ]; then
				echo "$v"
				break
			fi
		done
}

cluster_field() { pg_lsclusters -h "$VER" "$CLUSTER" 2>/dev/null | awk -v f="$1" '{print $f}'; }
cluster_online() { [ "$(cluster_field 4)" = online ]; }
cluster_log() { cluster_field 7; }

ensure_cluster() {
	VER="$(cluster_version)"
	if [ -z "$VER" ]; then
		VER="$(installed_version)"
		log "creating cluster $VER/$CLUSTER on port $PORT"
		pg_createcluster --port "$PORT" "$VER" "$CLUSTER" >/dev/null
	fi
	local port
	port="$(cluster_field 3)"
	if [ "$port" != "$PORT" ]; then
		log "cluster $VER/$CLUSTER is configured for port $port: moving it to $PORT"
		pg_conftool "$VER" "$CLUSTER" set port "$PORT"
		if cluster_online; then
			pg_ctlcluster --skip-systemctl-redirect "$VER" "$CLUSTER" restart
		fi
	fi
	# Debian's default is 'localhost' (127.0.0.1 and ::1); anything else must include 127.0.0.1.
	local listen
	listen="$(pg_conftool -s "$VER" "$CLUSTER" show listen_addresses 2>/dev/null || echo localhost)"
	case ",${listen// /}," in
	*,localhost,* | *,127.0.0.1,* | *,\*,* | *,0.0.0.0,*) ;;
	*)
		log "listen_addresses is '$listen': setting it to 'localhost'"
		pg_conftool "$VER" "$CLUSTER" set listen_addresses localhost
		if cluster_online; then
			pg_ctlcluster --skip-systemctl-redirect "$VER" "$CLUSTER" restart
		fi
		;;
	esac
}

wait_ready() {
	local t0=$SECONDS
	until pg_isready -q -h "$HOST" -p "$PORT" -t 2; do
		if [ $((SECONDS - t0)) -ge "$READY_TIMEOUT" ]; then
			log "last lines of $(cluster_log):"
			tail -n 20 "$(cluster_log)" >&2 2>/dev/null || true
			die "not ready on $HOST:$PORT after ${READY_TIMEOUT}s; see $(cluster_log)"
		fi
		sleep 0.2
	done
}

cluster_start() {
	if cluster_online; then
		return 0
	fi
	log "starting cluster $VER/$CLUSTER"
	pg_ctlcluster --skip-systemctl-redirect "$VER" "$CLUSTER" start ||
		{
			tail -n 20 "$(cluster_log)" >&2 2>/dev/null || true
			die "pg_ctlcluster start failed; see $(cluster_log)"
		}
}

ensure_role_and_db() {
	psql_admin <<SQL
DO \$\$
BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$PG_USER') THEN
    CREATE ROLE $PG_USER LOGIN CREATEDB SUPERUSER PASSWORD '$PG_PASSWORD';
  ELSE
    ALTER ROLE $PG_USER LOGIN CREATEDB SUPERUSER PASSWORD '$PG_PASSWORD';
  END IF;
END
\$\$;
SELECT 'CREATE DATABASE $PG_DB OWNER $PG_USER'
WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = '$PG_DB')
\gexec
SQL
}

# ALTER SYSTEM + restart only when max_connections is below the minimum.
ensure_max_connections() {
	local cur
	cur="$(psql_admin -At -c 'SHOW max_connections')"
	if [ "$cur" -lt "$MAX_CONN" ]; then
		log "max_connections is $cur: raising it to $MAX_CONN (restart)"
		psql_admin -c "ALTER SYSTEM SET max_connections = $MAX_CONN"
		pg_ctlcluster --skip-systemctl-redirect "$VER" "$CLUSTER" restart
		wait_ready
	fi
}

check_dsn() { psql -X -q -At "$DSN" -c 'SELECT 1' >/dev/null 2>&1; }

do_start() {
	ensure_installed
	local t0=$SECONDS
	ensure_cluster
	cluster_start
	wait_ready
	ensure_role_and_db
	ensure_max_connections
	check_dsn || die "cannot connect with $DSN (check pg_hba.conf: a 'host all all 127.0.0.1/32 scram-sha-256' line is needed)"
	log "ready on $HOST:$PORT (cluster $VER/$CLUSTER, max_connections $(psql_admin -At -c 'SHOW max_connections'), $((SECONDS - t0))s); log: $(cluster_log)"
}

do_stop() {
	if ! server_installed; then
		log "not installed"
		return 0
	fi
	VER="$(cluster_version)"
	if [ -z "$VER" ] || ! cluster_online; then
		log "not running"
		return 0
	fi
	pg_ctlcluster --skip-systemctl-redirect -m fast "$VER" "$CLUSTER" stop
	log "stopped cluster $VER/$CLUSTER"
}

do_status() {
	if ! server_installed; then
		echo "postgres: not installed"
		return 3
	fi
	VER="$(cluster_version)"
	if [ -z "$VER" ]; then
		echo "postgres: no cluster '$CLUSTER'"
		return 3
	fi
	if cluster_online && pg_isready -q -h "$HOST" -p "$PORT" && check_dsn; then
		echo "postgres: running (cluster $VER/$CLUSTER) on $HOST:$PORT; log $(cluster_log)"
		return 0
	fi
	echo "postgres: cluster $VER/$CLUSTER $(cluster_field 4); $DSN not accepting connections"
	return 3
}

usage() {
	sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//'
	exit 2
}

VER=""
case "${1:-}" in
start) do_start ;;
stop) do_stop ;;
restart) do_stop && do_start ;;
status)
	do_status
	exit $?
	;;
dsn) echo "$DSN" ;;
*) usage ;;
esac
