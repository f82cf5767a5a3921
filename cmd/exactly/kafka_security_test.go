package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/exactlyhq/exactly/internal/kafkatest"
)

// TestKafkaSecurityFlags: the -kafka-* flags, their defaults from the
// environment the example programs read, and the refusal of SASL PLAIN
// without TLS unless -kafka-sasl-plaintext-ok. Not parallel: it sets the
// environment.
func TestKafkaSecurityFlags(t *testing.T) {
	dir := t.TempDir()
	notPEM := filepath.Join(dir, "not.pem")
	if err := os.WriteFile(notPEM, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	ca := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(ca, kafkatest.SelfSignedCA(t), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("KAFKA_SASL_USERNAME", "u")
	t.Setenv("KAFKA_SASL_PASSWORD", "p")
	for _, tc := range []struct {
		env        []string // KEY=VALUE pairs set for this case
		args       []string
		tls, roots bool
		sasl       string // the mechanism's name, "" for none
		err        string // an error containing this, "" for none
	}{
		{args: nil},
		{args: []string{"-kafka-tls"}, tls: true},
		{args: []string{"-kafka-ca", ca}, tls: true, roots: true},
		{args: []string{"-kafka-sasl", "plain"}, err: "-kafka-sasl plain without TLS sends the password in clear text: connect over TLS (-kafka-tls or -kafka-ca), or set -kafka-sasl-plaintext-ok"},
		{args: []string{"-kafka-sasl", "plain", "-kafka-sasl-plaintext-ok"}, sasl: "PLAIN"},
		{args: []string{"-kafka-sasl", "plain", "-kafka-tls"}, tls: true, sasl: "PLAIN"},
		{args: []string{"-kafka-sasl", "plain", "-kafka-ca", ca}, tls: true, roots: true, sasl: "PLAIN"},
		{args: []string{"-kafka-sasl", "scram-sha-256"}, sasl: "SCRAM-SHA-256"},
		{args: []string{"-kafka-sasl", "scram-sha-512", "-kafka-tls"}, tls: true, sasl: "SCRAM-SHA-512"},
		{args: []string{"-kafka-sasl", "kerberos"}, err: "not plain"},
		{args: []string{"-kafka-ca", filepath.Join(dir, "missing.pem")}, err: "-kafka-ca"},
		{args: []string{"-kafka-ca", notPEM}, err: "no PEM certificate"},
		// Defaults from the environment; flags win.
		{env: []string{"KAFKA_CA_FILE=" + ca, "KAFKA_SASL_MECHANISM=scram-sha-512"}, tls: true, roots: true, sasl: "SCRAM-SHA-512"},
		{env: []string{"KAFKA_TLS=true"}, tls: true},
		{env: []string{"KAFKA_TLS=true"}, args: []string{"-kafka-tls=false"}},
		{env: []string{"KAFKA_SASL_MECHANISM=plain"}, err: "$KAFKA_SASL_MECHANISM plain without TLS"},
		{env: []string{"KAFKA_SASL_MECHANISM=plain", "KAFKA_SASL_ALLOW_PLAINTEXT=true"}, sasl: "PLAIN"},
		{env: []string{"KAFKA_SASL_MECHANISM=plain", "KAFKA_SASL_ALLOW_PLAINTEXT=true"}, args: []string{"-kafka-sasl-plaintext-ok=false"}, err: "clear text"},
		{env: []string{"KAFKA_SASL_MECHANISM=plain"}, args: []string{"-kafka-sasl", "scram-sha-256"}, sasl: "SCRAM-SHA-256"},
		{env: []string{"KAFKA_CA_FILE=" + notPEM}, err: "$KAFKA_CA_FILE: " + notPEM + " holds no PEM certificate"},
		{env: []string{"KAFKA_CA_FILE=" + notPEM}, args: []string{"-kafka-ca", ca}, tls: true, roots: true},
		{env: []string{"KAFKA_TLS=maybe"}, err: `KAFKA_TLS: "maybe" is not true or false`},
	} {
		for _, k := range []string{"KAFKA_TLS", "KAFKA_CA_FILE", "KAFKA_SASL_MECHANISM", "KAFKA_SASL_ALLOW_PLAINTEXT"} {
			t.Setenv(k, "")
		}
		for _, kv := range tc.env {
			k, v, _ := strings.Cut(kv, "=")
			t.Setenv(k, v)
		}
		what := fmt.Sprint(tc.env, tc.args)
		fs := flag.NewFlagSet("t", flag.ContinueOnError)
		sec := addKafkaSecurity(fs)
		if err := fs.Parse(tc.args); err != nil {
			t.Fatal(err)
		}
		tr, err := sec.transport()
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%s: error %v, want one containing %q", what, err, tc.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", what, err)
			continue
		}
		sasl := ""
		if tr.SASL != nil {
			sasl = tr.SASL.Name()
		}
		if (tr.TLS != nil) != tc.tls || (tr.TLS != nil && (tr.TLS.RootCAs != nil) != tc.roots) || sasl != tc.sasl {
			t.Errorf("%s: TLS %v (own roots %v), SASL %q; want TLS %v (own roots %v), SASL %q",
				what, tr.TLS != nil, tr.TLS != nil && tr.TLS.RootCAs != nil, sasl, tc.tls, tc.roots, tc.sasl)
		}
	}
	for _, k := range []string{"KAFKA_TLS", "KAFKA_CA_FILE", "KAFKA_SASL_MECHANISM", "KAFKA_SASL_ALLOW_PLAINTEXT", "KAFKA_SASL_PASSWORD"} {
		t.Setenv(k, "")
	}
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	sec := addKafkaSecurity(fs)
	if err := fs.Parse([]string{"-kafka-sasl", "plain", "-kafka-tls"}); err != nil {
		t.Fatal(err)
	}
	if _, err := sec.transport(); err == nil || !strings.Contains(err.Error(), "KAFKA_SASL_PASSWORD") {
		t.Errorf("SASL without a password: %v", err)
	}
}
