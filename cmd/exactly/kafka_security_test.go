package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"flag"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestKafkaSecurityFlags(t *testing.T) {
	dir := t.TempDir()
	notPEM := filepath.Join(dir, "not.pem")
	if err := os.WriteFile(notPEM, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	ca := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(ca, selfSignedPEM(t), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("KAFKA_SASL_USERNAME", "u")
	t.Setenv("KAFKA_SASL_PASSWORD", "p")
	for _, tc := range []struct {
		args       []string
		tls, roots bool
		sasl       string // the mechanism's name, "" for none
		err        string // an error containing this, "" for none
	}{
		{args: nil},
		{args: []string{"-kafka-tls"}, tls: true},
		{args: []string{"-kafka-ca", ca}, tls: true, roots: true},
		{args: []string{"-kafka-sasl", "plain"}, sasl: "PLAIN"},
		{args: []string{"-kafka-sasl", "scram-sha-256"}, sasl: "SCRAM-SHA-256"},
		{args: []string{"-kafka-sasl", "scram-sha-512", "-kafka-tls"}, tls: true, sasl: "SCRAM-SHA-512"},
		{args: []string{"-kafka-sasl", "kerberos"}, err: "not plain"},
		{args: []string{"-kafka-ca", filepath.Join(dir, "missing.pem")}, err: "-kafka-ca"},
		{args: []string{"-kafka-ca", notPEM}, err: "no PEM certificate"},
	} {
		fs := flag.NewFlagSet("t", flag.ContinueOnError)
		sec := addKafkaSecurity(fs)
		if err := fs.Parse(tc.args); err != nil {
			t.Fatal(err)
		}
		tr, err := sec.transport()
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%v: error %v, want one mentioning %q", tc.args, err, tc.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("%v: %v", tc.args, err)
			continue
		}
		sasl := ""
		if tr.SASL != nil {
			sasl = tr.SASL.Name()
		}
		if (tr.TLS != nil) != tc.tls || (tr.TLS != nil && (tr.TLS.RootCAs != nil) != tc.roots) || sasl != tc.sasl {
			t.Errorf("%v: TLS %v (own roots %v), SASL %q; want TLS %v (own roots %v), SASL %q",
				tc.args, tr.TLS != nil, tr.TLS != nil && tr.TLS.RootCAs != nil, sasl, tc.tls, tc.roots, tc.sasl)
		}
	}
	t.Setenv("KAFKA_SASL_PASSWORD", "")
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	sec := addKafkaSecurity(fs)
	if err := fs.Parse([]string{"-kafka-sasl", "plain"}); err != nil {
		t.Fatal(err)
	}
	if _, err := sec.transport(); err == nil || !strings.Contains(err.Error(), "KAFKA_SASL_PASSWORD") {
		t.Errorf("SASL without a password: %v", err)
	}
}

func selfSignedPEM(t *testing.T) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}
