#!/usr/bin/env bash
# PostgreSQL + Kafka for tests and benchmarks, without Docker.
#
#   deploy/local/services.sh up|down|status|env
#
#   up      postgres.sh start, then kafka.sh start; prints the environment to use.
#   down    stop both (data is kept; Kafka's in $EXACTLY_STATE_DIR, default <repo>/.local).
#   status  both statuses; exit 0 only when both run.
#   env     print only the export lines: eval "$(deploy/local/services.sh env)"
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
KAFKA_PORT="${EXACTLY_KAFKA_PORT:-9092}"
KAFKA_SASL_PORT="${EXACTLY_KAFKA_SASL_PORT:-9094}"
KAFKA_TLS_PORT="${EXACTLY_KAFKA_TLS_PORT:-9095}"
STATE_ROOT="$(realpath -m "${EXACTLY_STATE_DIR:-$HERE/../../.local}")"

print_env() {
	echo "export DATABASE_URL='$("$HERE/postgres.sh" dsn)'"
	echo "export KAFKA_BROKERS='127.0.0.1:$KAFKA_PORT'"
	echo "export KAFKA_SASL_BROKERS='127.0.0.1:$KAFKA_SASL_PORT'"
	echo "export KAFKA_TLS_BROKERS='127.0.0.1:$KAFKA_TLS_PORT'"
	echo "export KAFKA_TLS_CA='$STATE_ROOT/kafka/tls/ca.pem'"
}

case "${1:-}" in
up)
	t0=$SECONDS
	"$HERE/postgres.sh" start
	"$HERE/kafka.sh" start
	echo "services up in $((SECONDS - t0))s. Environment for tests:"
	print_env
	;;
down)
	rc=0
	"$HERE/kafka.sh" stop || rc=1
	"$HERE/postgres.sh" stop || rc=1
	exit $rc
	;;
status)
	rc=0
	"$HERE/postgres.sh" status || rc=3
	"$HERE/kafka.sh" status || rc=3
	exit $rc
	;;
env) print_env ;;
*)
	sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//'
	exit 2
	;;
esac
