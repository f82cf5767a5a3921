package kafkasec_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/exactlyhq/exactly/internal/kafkasec"
	"github.com/exactlyhq/exactly/internal/kafkatest"
)

func TestFromEnvBuild(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ca := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(ca, kafkatest.SelfSignedCA(t), 0o600); err != nil {
		t.Fatal(err)
	}
	notPEM := filepath.Join(dir, "not.pem")
	if err := os.WriteFile(notPEM, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	creds := map[string]string{"KAFKA_SASL_USERNAME": "u", "KAFKA_SASL_PASSWORD": "p"}
	with := func(kv ...string) map[string]string {
		m := map[string]string{}
		for k, v := range creds {
			m[k] = v
		}
		for i := 0; i < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return m
	}
	for _, tc := range []struct {
		name       string
		env        map[string]string
		tls, roots bool
		sasl       string // the mechanism's name, "" for none
		err        string // an error containing this, "" for none
	}{
		{name: "nothing", env: nil},
		{name: "credentials alone", env: creds},
		{name: "tls", env: with("KAFKA_TLS", "true"), tls: true},
		{name: "tls false", env: with("KAFKA_TLS", "false")},
		{name: "ca implies tls", env: with("KAFKA_CA_FILE", ca), tls: true, roots: true},
		{name: "plain over tls", env: with("KAFKA_CA_FILE", ca, "KAFKA_SASL_MECHANISM", "plain"), tls: true, roots: true, sasl: "PLAIN"},
		{name: "PLAIN upper case over tls", env: with("KAFKA_TLS", "1", "KAFKA_SASL_MECHANISM", "PLAIN"), tls: true, sasl: "PLAIN"},
		{name: "plain without tls refused", env: with("KAFKA_SASL_MECHANISM", "plain"), err: "plain without TLS sends the password in clear text"},
		{name: "refusal names the allow variable", env: with("KAFKA_SASL_MECHANISM", "plain"), err: "connect over TLS (KAFKA_TLS=true or $KAFKA_CA_FILE), or set KAFKA_SASL_ALLOW_PLAINTEXT=true on a network you trust"},
		{name: "plain without tls, allowed false", env: with("KAFKA_SASL_MECHANISM", "plain", "KAFKA_SASL_ALLOW_PLAINTEXT", "false"), err: "clear text"},
		{name: "plain without tls allowed", env: with("KAFKA_SASL_MECHANISM", "plain", "KAFKA_SASL_ALLOW_PLAINTEXT", "true"), sasl: "PLAIN"},
		{name: "scram-sha-256 without tls", env: with("KAFKA_SASL_MECHANISM", "scram-sha-256"), sasl: "SCRAM-SHA-256"},
		{name: "scram-sha-512 over tls", env: with("KAFKA_SASL_MECHANISM", "SCRAM-SHA-512", "KAFKA_TLS", "true"), tls: true, sasl: "SCRAM-SHA-512"},
		{name: "unknown mechanism", env: with("KAFKA_SASL_MECHANISM", "gssapi", "KAFKA_TLS", "true"), err: `$KAFKA_SASL_MECHANISM: "gssapi" is not plain`},
		{name: "no password", env: map[string]string{"KAFKA_SASL_MECHANISM": "scram-sha-512", "KAFKA_SASL_USERNAME": "u"}, err: "a password ($KAFKA_SASL_PASSWORD)"},
		{name: "no user", env: map[string]string{"KAFKA_SASL_MECHANISM": "scram-sha-512", "KAFKA_SASL_PASSWORD": "p"}, err: "a user ($KAFKA_SASL_USERNAME)"},
		{name: "missing ca", env: with("KAFKA_CA_FILE", filepath.Join(dir, "missing.pem")), err: "$KAFKA_CA_FILE: open"},
		{name: "ca without a certificate", env: with("KAFKA_CA_FILE", notPEM), err: "holds no PEM certificate"},
		{name: "malformed tls", env: with("KAFKA_TLS", "yes please"), err: `KAFKA_TLS: "yes please" is not true or false`},
		{name: "malformed allow", env: with("KAFKA_SASL_ALLOW_PLAINTEXT", "sure"), err: `KAFKA_SASL_ALLOW_PLAINTEXT: "sure" is not true or false`},
	} {
		s, err := kafkasec.FromEnv(func(k string) string { return tc.env[k] })
		var sec kafkasec.Security
		if err == nil {
			sec, err = s.Build()
		}
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%s: error %v, want one containing %q", tc.name, err, tc.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		name := ""
		if sec.SASL != nil {
			name = sec.SASL.Name()
		}
		if (sec.TLS != nil) != tc.tls || (sec.TLS != nil && (sec.TLS.RootCAs != nil) != tc.roots) || name != tc.sasl {
			t.Errorf("%s: TLS %v (own roots %v), SASL %q; want TLS %v (own roots %v), SASL %q",
				tc.name, sec.TLS != nil, sec.TLS != nil && sec.TLS.RootCAs != nil, name, tc.tls, tc.roots, tc.sasl)
		}
		if sec.IsZero() != (!tc.tls && tc.sasl == "") {
			t.Errorf("%s: IsZero %v", tc.name, sec.IsZero())
		}
		d, tr := sec.Dialer(), sec.Transport()
		if d.TLS != sec.TLS || d.SASLMechanism != sec.SASL || tr.TLS != sec.TLS || tr.SASL != sec.SASL || d.Timeout <= 0 {
			t.Errorf("%s: Dialer %+v or Transport %+v do not carry the settings", tc.name, d, tr)
		}
	}
}

// TestNames: errors name where a setting came from (the CLI passes its
// flags' names).
func TestNames(t *testing.T) {
	t.Parallel()
	s := kafkasec.Settings{Mechanism: "plain", Username: "u", Password: "p",
		Names: kafkasec.Names{TLS: "-tls", CAFile: "-ca", Mechanism: "-sasl", Username: "-user", Password: "$PW", AllowPlaintext: "-plaintext-ok"}}
	if _, err := s.Build(); err == nil || !strings.Contains(err.Error(), "-sasl plain without TLS") || !strings.Contains(err.Error(), "(-tls or -ca), or set -plaintext-ok") {
		t.Errorf("error %v does not name the flags", err)
	}
}

// TestBrokers connects with what Build returns to the local broker's
// SASL_SSL listener (127.0.0.1:9095, the test CA) and, explicitly allowed,
// its SASL_PLAINTEXT listener (127.0.0.1:9094): a Transport reads metadata,
// a Dialer dials; a wrong CA is refused.
func TestBrokers(t *testing.T) {
	t.Parallel()
	env := map[string]string{
		"KAFKA_SASL_MECHANISM": "plain",
		"KAFKA_SASL_USERNAME":  kafkatest.SASLUser,
		"KAFKA_SASL_PASSWORD":  kafkatest.SASLPassword,
	}
	build := func(t *testing.T, kv ...string) kafkasec.Security {
		t.Helper()
		e := map[string]string{}
		for k, v := range env {
			e[k] = v
		}
		for i := 0; i < len(kv); i += 2 {
			e[kv[i]] = kv[i+1]
		}
		s, err := kafkasec.FromEnv(func(k string) string { return e[k] })
		if err != nil {
			t.Fatal(err)
		}
		sec, err := s.Build()
		if err != nil {
			t.Fatal(err)
		}
		return sec
	}
	reach := func(sec kafkasec.Security, brokers []string) error {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		tr := sec.Transport()
		defer tr.CloseIdleConnections()
		cl := &kafka.Client{Addr: kafka.TCP(brokers...), Transport: tr, Timeout: 10 * time.Second}
		if _, err := cl.Metadata(ctx, &kafka.MetadataRequest{}); err != nil {
			return err
		}
		conn, err := sec.Dialer().DialContext(ctx, "tcp", brokers[0])
		if err != nil {
			return err
		}
		defer conn.Close()
		_, err = conn.Brokers()
		return err
	}
	t.Run("sasl_ssl", func(t *testing.T) {
		t.Parallel()
		if err := reach(build(t, "KAFKA_CA_FILE", kafkatest.TLSCAFile(t)), kafkatest.TLSBrokers()); err != nil {
			t.Fatal(err)
		}
		other := filepath.Join(t.TempDir(), "other-ca.pem")
		if err := os.WriteFile(other, kafkatest.SelfSignedCA(t), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := reach(build(t, "KAFKA_CA_FILE", other), kafkatest.TLSBrokers()); err == nil || !strings.Contains(err.Error(), "certificate signed by unknown authority") {
			t.Fatalf("another CA: %v, want the certificate refused", err)
		}
	})
	t.Run("sasl_plaintext_allowed", func(t *testing.T) {
		t.Parallel()
		if err := reach(build(t, "KAFKA_SASL_ALLOW_PLAINTEXT", "true"), kafkatest.SASLBrokers()); err != nil {
			t.Fatal(err)
		}
	})
}
