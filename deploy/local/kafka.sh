#!/usr/bin/env bash
# Single-node Kafka (KRaft, broker+controller in one JVM) run straight from Maven Central jars.
#
#   deploy/local/kafka.sh start|stop|restart|kill|status
#
#   start    fetch jars once, write config, format storage once, start, wait until ready.
#            Idempotent: exits 0 at once when the broker already answers.
#   stop     SIGTERM, wait up to EXACTLY_KAFKA_STOP_TIMEOUT s, then SIGKILL.
#   restart  stop + start; data (topics, offsets) is kept.
#   kill     SIGKILL without grace (crash simulation); data is kept.
#   status   exit 0 when running and its port answers, 3 otherwise.
#
# Environment (all optional):
#   EXACTLY_STATE_DIR            default <repo>/.local; Kafka lives in $EXACTLY_STATE_DIR/kafka
#   EXACTLY_KAFKA_PORT           PLAINTEXT port, default 9092 (always 127.0.0.1)
#   EXACTLY_KAFKA_CONTROLLER_PORT default 9093
#   EXACTLY_KAFKA_SASL_PORT      SASL_PLAINTEXT port, default 9094: mechanism PLAIN, user "exactly",
#                                password "exactly-secret" (a local test fixture, never a real secret)
#   EXACTLY_KAFKA_TLS_PORT       SASL_SSL port, default 9095: the same user, TLS with a certificate
#                                from a throwaway CA (deploy/local/tls.sh; clients trust
#                                <state>/kafka/tls/ca.pem)
#   EXACTLY_KAFKA_HEAP           default "-Xms512m -Xmx1g"
#   EXACTLY_KAFKA_READY_TIMEOUT  seconds to wait for readiness, default 90
#   EXACTLY_KAFKA_STOP_TIMEOUT   seconds to wait after SIGTERM, default 30
#
# Logs: <state>/kafka/logs/server.log (broker, log4j2, rolled at 100 MB);
#       <state>/kafka/logs/console.log (JVM stdout/stderr: startup crashes land here).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
STATE_ROOT="${EXACTLY_STATE_DIR:-$REPO/.local}"
STATE="$STATE_ROOT/kafka"
LIBS="$STATE/libs"
DATA="$STATE/data"
LOGS="$STATE/logs"
PIDFILE="$STATE/kafka.pid"
CONF="$STATE/server.properties"
TLS_DIR="$STATE/tls"
LOG4J="$STATE/log4j2.properties"
TOOLS_LOG4J="$STATE/tools-log4j2.properties"
SERVER_LOG="$LOGS/server.log"
CONSOLE_LOG="$LOGS/console.log"

HOST=127.0.0.1
PORT="${EXACTLY_KAFKA_PORT:-9092}"
CPORT="${EXACTLY_KAFKA_CONTROLLER_PORT:-9093}"
SASL_PORT="${EXACTLY_KAFKA_SASL_PORT:-9094}"
TLS_PORT="${EXACTLY_KAFKA_TLS_PORT:-9095}"
BOOTSTRAP="$HOST:$PORT"
HEAP="${EXACTLY_KAFKA_HEAP:--Xms512m -Xmx1g}"
READY_TIMEOUT="${EXACTLY_KAFKA_READY_TIMEOUT:-90}"
STOP_TIMEOUT="${EXACTLY_KAFKA_STOP_TIMEOUT:-30}"

log() { printf '[kafka] %s\n' "$*" >&2; }
die() { printf '[kafka] ERROR: %s\n' "$*" >&2; exit 1; }

# ---------------------------------------------------------------- prerequisites

ensure_java() {
	local missing=()
	# A JDK, not a JRE: the tests run Kafka's Java client as a single-file
	# source program (internal/kafkatest/java), which needs jdk.compiler.
	{ command -v java >/dev/null 2>&1 && command -v javac >/dev/null 2>&1; } || missing+=(default-jdk-headless)
	command -v mvn >/dev/null 2>&1 || missing+=(maven)
	[ ${#missing[@]} -eq 0 ] && return 0
	[ "$(id -u)" = 0 ] || die "missing ${missing[*]}; install them (apt-get install ${missing[*]})"
	log "installing ${missing[*]} with apt-get"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# The marker holds the pom's checksum: editing the pom re-fetches the jars.
ensure_libs() {
	local want have=""
	want="$(sha256sum "$HERE/pom.xml" | cut -d' ' -f1)"
	[ -f "$LIBS/.complete" ] && have="$(cat "$LIBS/.complete")"
	if [ "$want" = "$have" ] && compgen -G "$LIBS/kafka_2.13-*.jar" >/dev/null; then
		return 0
	fi
	ensure_java
	log "fetching Kafka jars from Maven Central into $LIBS (once)"
	local t0=$SECONDS tmp="$STATE/libs.tmp"
	rm -rf "$tmp"
	mkdir -p "$tmp"
	if ! mvn -B -q -f "$HERE/pom.xml" \
		org.apache.maven.plugins:maven-dependency-plugin:3.8.1:copy-dependencies \
		-DincludeScope=runtime -DoutputDirectory="$tmp" >"$STATE/mvn.log" 2>&1; then
		tail -n 40 "$STATE/mvn.log" >&2
		die "maven could not fetch the jars (full output: $STATE/mvn.log)"
	fi
	echo "$want" >"$tmp/.complete"
	rm -rf "$LIBS"
	mv "$tmp" "$LIBS"
	log "jars fetched in $((SECONDS - t0)) s ($(find "$LIBS" -name '*.jar' | wc -l) jars)"
}

write_config() {
	mkdir -p "$DATA" "$LOGS"
	cat >"$CONF.tmp" <<EOF
# Written by deploy/local/kafka.sh on every start: edit the script, not this file.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@$HOST:$CPORT
listeners=PLAINTEXT://$HOST:$PORT,CONTROLLER://$HOST:$CPORT,SASL_PLAINTEXT://$HOST:$SASL_PORT,SASL_SSL://$HOST:$TLS_PORT
advertised.listeners=PLAINTEXT://$HOST:$PORT,CONTROLLER://$HOST:$CPORT,SASL_PLAINTEXT://$HOST:$SASL_PORT,SASL_SSL://$HOST:$TLS_PORT
inter.broker.listener.name=PLAINTEXT
controller.listener.names=CONTROLLER
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT,SASL_SSL:SASL_SSL

# SASL listeners for the tests of TLS/SASL-configured clients (PLAIN, one user), one of them
# over TLS with the test certificate of deploy/local/tls.sh.
sasl.enabled.mechanisms=PLAIN
listener.name.sasl_plaintext.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required user_exactly="exactly-secret";
listener.name.sasl_ssl.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required user_exactly="exactly-secret";
listener.name.sasl_ssl.ssl.keystore.type=PKCS12
listener.name.sasl_ssl.ssl.keystore.location=$TLS_DIR/broker.p12
listener.name.sasl_ssl.ssl.keystore.password=exactly-secret
listener.name.sasl_ssl.ssl.key.password=exactly-secret
log.dirs=$DATA

num.partitions=1
default.replication.factor=1
min.insync.replicas=1
auto.create.topics.enable=true
delete.topic.enable=true

offsets.topic.replication.factor=1
offsets.topic.num.partitions=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
share.coordinator.state.topic.num.partitions=1

# A group's first join must not wait 3 s for more members.
group.initial.rebalance.delay.ms=0

# After a crash (kill -9) the restarted broker cannot register until the old incarnation's
# session expires (default 9 s): 5 s halves that wait and still leaves 5 missed heartbeats.
broker.heartbeat.interval.ms=1000
broker.session.timeout.ms=5000
EOF
	mv "$CONF.tmp" "$CONF"

	cat >"$LOG4J" <<EOF
# Written by deploy/local/kafka.sh.
status = warn
name = exactly-local-kafka

appender.file.type = RollingFile
appender.file.name = FILE
appender.file.fileName = $SERVER_LOG
appender.file.filePattern = $LOGS/server.log.%i
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
appender.file.policies.type = Policies
appender.file.policies.size.type = SizeBasedTriggeringPolicy
appender.file.policies.size.size = 100MB
appender.file.strategy.type = DefaultRolloverStrategy
appender.file.strategy.max = 3

rootLogger.level = INFO
rootLogger.appenderRef.file.ref = FILE

logger.request.name = kafka.request.logger
logger.request.level = WARN
logger.requestchannel.name = kafka.network.RequestChannel\$
logger.requestchannel.level = WARN
logger.statechange.name = state.change.logger
logger.statechange.level = WARN
EOF

	cat >"$TOOLS_LOG4J" <<'EOF'
status = warn
appender.err.type = Console
appender.err.name = STDERR
appender.err.target = SYSTEM_ERR
appender.err.layout.type = PatternLayout
appender.err.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = WARN
rootLogger.appenderRef.err.ref = STDERR
EOF
}

# Format once: meta.properties marks a formatted log dir.
ensure_formatted() {
	[ -f "$DATA/meta.properties" ] && return 0
	local id
	id="$(java -Xmx256m -cp "$LIBS/*" -Dlog4j2.configurationFile="$TOOLS_LOG4J" \
		kafka.tools.StorageTool random-uuid)"
	log "formatting $DATA (cluster id $id)"
	java -Xmx256m -cp "$LIBS/*" -Dlog4j2.configurationFile="$TOOLS_LOG4J" \
		kafka.tools.StorageTool format -t "$id" -c "$CONF" >"$LOGS/format.log" 2>&1 ||
		{ cat "$LOGS/format.log" >&2; die "formatting storage failed"; }
}

# ---------------------------------------------------------------- process state

# Prints the pid of this state dir's broker, if one runs.
running_pid() {
	local pid
	if [ -f "$PIDFILE" ]; then
		pid="$(cat "$PIDFILE" 2>/dev/null || true)"
		if [ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ] &&
			tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF "kafka.Kafka $CONF"; then
			echo "$pid"
			return 0
		fi
	fi
	# Pid file lost or stale: look for a broker started on exactly this config file.
	pid="$(pgrep -f -- "kafka.Kafka $CONF\$" | sed -n 1p || true)"
	if [ -n "$pid" ]; then
		echo "$pid" >"$PIDFILE"
		echo "$pid"
		return 0
	fi
	rm -f "$PIDFILE"
	return 1
}

port_open() { (exec 3<>"/dev/tcp/$HOST/$1") 2>/dev/null; }

port_owner() { ss -ltnpH "sport = :$1" 2>/dev/null | grep -o 'pid=[0-9]*' | sed -n '1s/^pid=//p'; }

# A real Kafka API round trip (ApiVersions + Metadata) through the admin client.
metadata_ok() {
	timeout "${1:-30}" java -Xmx256m -XX:TieredStopAtLevel=1 -XX:+UseSerialGC -cp "$LIBS/*" \
		-Dlog4j2.configurationFile="$TOOLS_LOG4J" \
		org.apache.kafka.tools.TopicCommand --bootstrap-server "$BOOTSTRAP" --list \
		>/dev/null 2>"$LOGS/readiness.err"
}

# The first FindCoordinator creates __consumer_offsets; do it here, once, so that the first
# consumer group join in a test does not pay for it. Best effort: the tool exits 0 anyway.
warm_group_coordinator() {
	compgen -G "$DATA/__consumer_offsets-*" >/dev/null && return 0
	timeout 60 java -Xmx256m -XX:TieredStopAtLevel=1 -XX:+UseSerialGC -cp "$LIBS/*" \
		-Dlog4j2.configurationFile="$TOOLS_LOG4J" \
		org.apache.kafka.tools.consumer.group.ConsumerGroupCommand --bootstrap-server "$BOOTSTRAP" \
		--describe --group exactly-warmup >/dev/null 2>&1 || true
}

show_logs() {
	log "last lines of $SERVER_LOG:"
	tail -n 30 "$SERVER_LOG" 2>/dev/null >&2 || true
	if [ -s "$CONSOLE_LOG" ]; then
		log "last lines of $CONSOLE_LOG:"
		tail -n 15 "$CONSOLE_LOG" >&2 || true
	fi
}

wait_ready() {
	local pid="$1" t0=$SECONDS deadline=$((SECONDS + READY_TIMEOUT))
	while ! port_open "$PORT"; do
		if ! kill -0 "$pid" 2>/dev/null; then
			show_logs
			die "broker (pid $pid) exited during startup; see $SERVER_LOG and $CONSOLE_LOG"
		fi
		if [ $SECONDS -ge $deadline ]; then
			show_logs
			die "broker not listening on $BOOTSTRAP after ${READY_TIMEOUT}s; see $SERVER_LOG (pid $pid left running: deploy/local/kafka.sh stop ends it)"
		fi
		sleep 0.2
	done
	local port_s=$((SECONDS - t0))
	until metadata_ok; do
		if ! kill -0 "$pid" 2>/dev/null; then
			show_logs
			die "broker (pid $pid) exited during startup; see $SERVER_LOG"
		fi
		if [ $SECONDS -ge $deadline ]; then
			cat "$LOGS/readiness.err" >&2 || true
			show_logs
			die "broker on $BOOTSTRAP does not answer metadata requests after ${READY_TIMEOUT}s; see $SERVER_LOG (pid $pid left running: deploy/local/kafka.sh stop ends it)"
		fi
		sleep 1
	done
	warm_group_coordinator
	log "ready on $BOOTSTRAP (port open after ${port_s}s, metadata answered and group coordinator warm after $((SECONDS - t0))s)"
}

# ---------------------------------------------------------------- commands

do_start() {
	local pid
	if pid="$(running_pid)"; then
		if port_open "$PORT" && ! { port_open "$SASL_PORT" && port_open "$TLS_PORT"; }; then
			# Started by an older version of this script, without the SASL
			# listeners the tests need: the config is rewritten on start.
			log "running (pid $pid) without the SASL listeners on $HOST:$SASL_PORT and $HOST:$TLS_PORT: restarting it"
			do_stop
			do_start
			return
		fi
		if port_open "$PORT"; then
			log "already running (pid $pid) on $BOOTSTRAP; log: $SERVER_LOG"
			return 0
		fi
		log "already started (pid $pid), waiting until ready"
		wait_ready "$pid"
		return 0
	fi
	if port_open "$PORT"; then
		local owner
		owner="$(port_owner "$PORT")"
		log "$BOOTSTRAP is taken by another process${owner:+ (pid $owner: $(tr '\0' ' ' <"/proc/$owner/cmdline" 2>/dev/null | cut -c1-120))}"
		ensure_libs
		write_config
		if metadata_ok 10; then
			log "it answers as a Kafka broker: using it as is (not managed by this script)"
			return 0
		fi
		die "port $PORT is in use and is not a Kafka broker; stop that process or set EXACTLY_KAFKA_PORT"
	fi
	if port_open "$CPORT"; then
		die "controller port $HOST:$CPORT is in use (pid $(port_owner "$CPORT")); stop it or set EXACTLY_KAFKA_CONTROLLER_PORT"
	fi
	if port_open "$SASL_PORT"; then
		die "SASL port $HOST:$SASL_PORT is in use (pid $(port_owner "$SASL_PORT")); stop it or set EXACTLY_KAFKA_SASL_PORT"
	fi
	if port_open "$TLS_PORT"; then
		die "TLS port $HOST:$TLS_PORT is in use (pid $(port_owner "$TLS_PORT")); stop it or set EXACTLY_KAFKA_TLS_PORT"
	fi

	ensure_libs
	sh "$HERE/tls.sh" "$TLS_DIR"
	write_config
	ensure_formatted

	local t0=$SECONDS
	: >"$CONSOLE_LOG"
	# setsid + nohup: the broker outlives this shell, its terminal and make's process group.
	# shellcheck disable=SC2086 # HEAP is a list of JVM flags
	setsid nohup java $HEAP \
		-XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:InitiatingHeapOccupancyPercent=35 \
		-XX:+ExplicitGCInvokesConcurrent -XX:+ExitOnOutOfMemoryError -Djava.awt.headless=true \
		-Dkafka.logs.dir="$LOGS" -Dlog4j2.configurationFile="$LOG4J" \
		-cp "$LIBS/*" kafka.Kafka "$CONF" \
		</dev/null >>"$CONSOLE_LOG" 2>&1 9>&- &
	pid=$!
	echo "$pid" >"$PIDFILE"
	log "started pid $pid; log: $SERVER_LOG"
	wait_ready "$pid"
	log "start took $((SECONDS - t0))s"
}

do_stop() {
	local pid
	if ! pid="$(running_pid)"; then
		log "not running"
		return 0
	fi
	log "stopping pid $pid (SIGTERM, up to ${STOP_TIMEOUT}s)"
	local t0=$SECONDS
	kill -TERM "$pid" 2>/dev/null || true
	while kill -0 "$pid" 2>/dev/null; do
		if [ $((SECONDS - t0)) -ge "$STOP_TIMEOUT" ]; then
			log "still alive after ${STOP_TIMEOUT}s: SIGKILL"
			kill -KILL "$pid" 2>/dev/null || true
			sleep 0.5
			break
		fi
		sleep 0.2
	done
	rm -f "$PIDFILE"
	log "stopped in $((SECONDS - t0))s"
}

do_kill() {
	local pid
	if ! pid="$(running_pid)"; then
		log "not running"
		return 0
	fi
	kill -KILL "$pid" 2>/dev/null || true
	while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
	rm -f "$PIDFILE"
	log "killed pid $pid (SIGKILL)"
}

do_status() {
	local pid
	if pid="$(running_pid)"; then
		if port_open "$PORT"; then
			echo "kafka: running (pid $pid) on $BOOTSTRAP; state $STATE; log $SERVER_LOG"
			return 0
		fi
		echo "kafka: starting (pid $pid), $BOOTSTRAP not open yet; log $SERVER_LOG"
		return 3
	fi
	if port_open "$PORT"; then
		echo "kafka: not managed here, but $BOOTSTRAP is open (pid $(port_owner "$PORT"))"
		return 3
	fi
	echo "kafka: stopped; state $STATE"
	return 3
}

usage() {
	sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//'
	exit 2
}

cmd="${1:-}"
case "$cmd" in
start | stop | restart | kill | status) ;;
*) usage ;;
esac

mkdir -p "$STATE"
if [ "$cmd" = status ]; then
	do_status
	exit $?
fi
# One command at a time per state dir (parallel `make` targets, concurrent tests).
exec 9>"$STATE/.lock"
flock -w 180 9 || die "another kafka.sh holds $STATE/.lock"

case "$cmd" in
start) do_start ;;
stop) do_stop ;;
restart) do_stop && do_start ;;
kill) do_kill ;;
esac
