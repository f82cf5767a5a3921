package main

import (
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestKafkaSecurityFlags(t *testing.T) {
	notPEM := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(notPEM, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("KAFKA_SASL_USERNAME", "u")
	t.Setenv("KAFKA_SASL_PASSWORD", "p")
	for _, tc := range []struct {
		args []string
		want string // an error containing this, or "" for none
	}{
		{nil, ""},
		{[]string{"-kafka-tls"}, ""},
		{[]string{"-kafka-sasl", "plain"}, ""},
		{[]string{"-kafka-sasl", "scram-sha-512", "-kafka-tls"}, ""},
		{[]string{"-kafka-sasl", "kerberos"}, "not plain"},
		{[]string{"-kafka-ca", filepath.Join(t.TempDir(), "missing.pem")}, "-kafka-ca"},
		{[]string{"-kafka-ca", notPEM}, "no PEM certificate"},
	} {
		fs := flag.NewFlagSet("t", flag.ContinueOnError)
		sec := addKafkaSecurity(fs)
		if err := fs.Parse(tc.args); err != nil {
			t.Fatal(err)
		}
		tr, err := sec.transport()
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%v: %v", tc.args, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%v: error %v, want one mentioning %q", tc.args, err, tc.want)
		case err == nil && (tr.TLS != nil) != (len(tc.args) > 0 && strings.Contains(strings.Join(tc.args, " "), "-kafka-tls")):
			t.Errorf("%v: TLS %v", tc.args, tr.TLS != nil)
		}
	}
}
