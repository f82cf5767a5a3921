#!/bin/sh
# Test certificates for the broker's SASL_SSL listener, made with the JDK's keytool.
#
#   deploy/local/tls.sh DIR
#
# Writes, once (a second run finds DIR/.complete naming this version and does nothing):
#   DIR/ca.pem       the certificate of a throwaway CA, for clients (KAFKA_TLS_CA)
#   DIR/broker.p12   the broker's key and certificate (CN=localhost, SAN 127.0.0.1, ::1,
#                    localhost and kafka), signed by that CA; PKCS12, password "exactly-secret"
#   DIR/broker.password  that password, for the apache/kafka image (docker-compose.yml)
#
# A local test fixture, never a real secret: the CA's key is thrown away, the files are readable
# by everyone (the broker may run as another user, as in docker-compose.yml). POSIX sh, so that
# docker-compose.yml can run it in the Kafka image.
set -eu

DIR="${1:?usage: tls.sh DIR}"
PASS=exactly-secret
SAN="SAN=dns:localhost,dns:kafka,ip:127.0.0.1,ip:::1"
VERSION=1 # raise it when the files change: the next start writes them again (a running broker
          # keeps the certificate it started with: kafka.sh restart)

[ "$(cat "$DIR/.complete" 2>/dev/null)" = "$VERSION" ] && exit 0
KEYTOOL="$(command -v keytool || true)"
if [ -z "$KEYTOOL" ] && command -v java >/dev/null 2>&1; then
	KEYTOOL="$(dirname "$(readlink -f "$(command -v java)")")/keytool" # beside java, off the PATH
fi
[ -x "$KEYTOOL" ] || { echo "[tls] ERROR: keytool (from a JDK or JRE) not found" >&2; exit 1; }

mkdir -p "$DIR"
tmp="$(mktemp -d "$DIR/.tmp.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT

kt() { "$KEYTOOL" "$@" -storetype PKCS12 -storepass "$PASS" -keypass "$PASS" 2>"$tmp/keytool.err" || {
	cat "$tmp/keytool.err" >&2
	exit 1
}; }

kt -genkeypair -keystore "$tmp/ca.p12" -alias ca -keyalg RSA -keysize 2048 -validity 3650 \
	-dname "CN=exactly local test CA" -ext bc:c
kt -exportcert -keystore "$tmp/ca.p12" -alias ca -rfc -file "$tmp/ca.pem"
kt -genkeypair -keystore "$tmp/broker.p12" -alias broker -keyalg RSA -keysize 2048 -validity 3650 \
	-dname "CN=localhost" -ext "$SAN"
kt -certreq -keystore "$tmp/broker.p12" -alias broker -file "$tmp/broker.csr"
kt -gencert -keystore "$tmp/ca.p12" -alias ca -infile "$tmp/broker.csr" -outfile "$tmp/broker.pem" \
	-rfc -validity 3650 -ext "$SAN" -ext ku:c=digitalSignature,keyEncipherment -ext eku=serverAuth
kt -importcert -keystore "$tmp/broker.p12" -alias ca -file "$tmp/ca.pem" -noprompt
kt -importcert -keystore "$tmp/broker.p12" -alias broker -file "$tmp/broker.pem"

printf '%s' "$PASS" >"$tmp/broker.password"

mv "$tmp/ca.pem" "$tmp/broker.p12" "$tmp/broker.password" "$DIR/"
chmod 644 "$DIR/ca.pem" "$DIR/broker.p12" "$DIR/broker.password"
echo "$VERSION" >"$DIR/.complete"
echo "[tls] test CA and broker certificate written to $DIR" >&2
