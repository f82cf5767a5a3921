package main

import (
	"cmp"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"os"

	"github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/sasl"
	"github.com/segmentio/kafka-go/sasl/plain"
	"github.com/segmentio/kafka-go/sasl/scram"
)

// kafkaSecurity are the flags for a TLS and SASL connection to Kafka. The
// password is read from $KAFKA_SASL_PASSWORD only: a flag would show in
// process listings.
type kafkaSecurity struct {
	tls       *bool
	ca        *string
	mechanism *string
	user      *string
}

func addKafkaSecurity(fs *flag.FlagSet) kafkaSecurity {
	return kafkaSecurity{
		tls:       fs.Bool("kafka-tls", false, "connect to Kafka over TLS (system roots, or -kafka-ca)"),
		ca:        fs.String("kafka-ca", "", "PEM file of the CA that signed the brokers' certificates (implies -kafka-tls)"),
		mechanism: fs.String("kafka-sasl", "", "SASL mechanism: plain, scram-sha-256 or scram-sha-512 (password from $KAFKA_SASL_PASSWORD)"),
		user:      fs.String("kafka-user", "", "SASL user name (default $KAFKA_SASL_USERNAME)"),
	}
}

// transport builds the connection settings the flags describe.
func (k kafkaSecurity) transport() (*kafka.Transport, error) {
	t := &kafka.Transport{}
	if *k.tls || *k.ca != "" {
		t.TLS = &tls.Config{MinVersion: tls.VersionTLS12}
		if *k.ca != "" {
			pem, err := os.ReadFile(*k.ca)
			if err != nil {
				return nil, fmt.Errorf("-kafka-ca: %w", err)
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("-kafka-ca: %s holds no PEM certificate", *k.ca)
			}
			t.TLS.RootCAs = pool
		}
	}
	if *k.mechanism == "" {
		return t, nil
	}
	user, password := cmp.Or(*k.user, os.Getenv("KAFKA_SASL_USERNAME")), os.Getenv("KAFKA_SASL_PASSWORD")
	if user == "" || password == "" {
		return nil, errors.New("-kafka-sasl needs a user (-kafka-user or $KAFKA_SASL_USERNAME) and $KAFKA_SASL_PASSWORD")
	}
	var mech sasl.Mechanism
	switch *k.mechanism {
	case "plain":
		mech = plain.Mechanism{Username: user, Password: password}
	case "scram-sha-256", "scram-sha-512":
		algo := scram.SHA256
		if *k.mechanism == "scram-sha-512" {
			algo = scram.SHA512
		}
		m, err := scram.Mechanism(algo, user, password)
		if err != nil {
			return nil, fmt.Errorf("-kafka-sasl: %w", err)
		}
		mech = m
	default:
		return nil, fmt.Errorf("-kafka-sasl: %q is not plain, scram-sha-256 or scram-sha-512", *k.mechanism)
	}
	t.SASL = mech
	return t, nil
}
