package main

import (
	"cmp"
	"flag"
	"os"

	"github.com/segmentio/kafka-go"

	"github.com/exactlyhq/exactly/internal/kafkasec"
)

// kafkaSecurity are the flags for a TLS and SASL connection to Kafka. Each
// defaults to the environment variable the example programs read
// (internal/kafkasec), so that `exactly status` run inside one of their pods
// connects as the pod does. The password is read from $KAFKA_SASL_PASSWORD
// only: a flag would show in process listings.
type kafkaSecurity struct {
	fs          *flag.FlagSet
	tls         *bool
	ca          *string
	mechanism   *string
	user        *string
	plaintextOK *bool
}

func addKafkaSecurity(fs *flag.FlagSet) kafkaSecurity {
	return kafkaSecurity{
		fs:          fs,
		tls:         fs.Bool("kafka-tls", false, "connect to Kafka over TLS (system roots, or -kafka-ca) (default $KAFKA_TLS)"),
		ca:          fs.String("kafka-ca", "", "PEM file of the CA that signed the brokers' certificates, implies -kafka-tls (default $KAFKA_CA_FILE)"),
		mechanism:   fs.String("kafka-sasl", "", "SASL mechanism: plain, scram-sha-256 or scram-sha-512, password from $KAFKA_SASL_PASSWORD (default $KAFKA_SASL_MECHANISM)"),
		user:        fs.String("kafka-user", "", "SASL user name (default $KAFKA_SASL_USERNAME)"),
		plaintextOK: fs.Bool("kafka-sasl-plaintext-ok", false, "allow -kafka-sasl plain without TLS, which sends the password in clear text: only on a network you trust (default $KAFKA_SASL_ALLOW_PLAINTEXT)"),
	}
}

var flagNames = kafkasec.Names{
	TLS:            "-kafka-tls",
	CAFile:         "-kafka-ca",
	Mechanism:      "-kafka-sasl",
	Username:       "-kafka-user or $KAFKA_SASL_USERNAME",
	Password:       "$KAFKA_SASL_PASSWORD",
	AllowPlaintext: "-kafka-sasl-plaintext-ok",
}

// transport builds the connection settings the flags, and the environment
// for the flags not given, describe.
func (k kafkaSecurity) transport() (*kafka.Transport, error) {
	s, err := kafkasec.FromEnv(os.Getenv)
	if err != nil {
		return nil, err
	}
	// Errors name the flag, or the variable a value came from.
	names := flagNames
	if s.CAFile != "" {
		names.CAFile = kafkasec.EnvNames.CAFile
	}
	if s.Mechanism != "" {
		names.Mechanism = kafkasec.EnvNames.Mechanism
	}
	k.fs.Visit(func(f *flag.Flag) {
		switch f.Name {
		case "kafka-tls":
			s.TLS = *k.tls
		case "kafka-ca":
			s.CAFile, names.CAFile = *k.ca, flagNames.CAFile
		case "kafka-sasl":
			s.Mechanism, names.Mechanism = *k.mechanism, flagNames.Mechanism
		case "kafka-user":
			s.Username = cmp.Or(*k.user, s.Username)
		case "kafka-sasl-plaintext-ok":
			s.AllowPlaintext = *k.plaintextOK
		}
	})
	s.Names = names
	sec, err := s.Build()
	if err != nil {
		return nil, err
	}
	return sec.Transport(), nil
}
