// Package kafkasec reads the TLS and SASL settings of a connection to Kafka,
// checks them and builds kafka-go's Dialer and Transport from them. The
// exactly CLI (its -kafka-* flags, defaulting to the environment) and the
// example programs (the environment only) share it, so both read the same
// variables and refuse the same mistakes.
//
// SASL PLAIN without TLS is refused unless explicitly allowed: it sends the
// password in clear text to anyone on the path.
package kafkasec

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/sasl"
	"github.com/segmentio/kafka-go/sasl/plain"
	"github.com/segmentio/kafka-go/sasl/scram"
)

// The environment variables FromEnv reads.
const (
	// EnvTLS "true" connects over TLS, trusting the system roots unless
	// EnvCAFile names a CA bundle.
	EnvTLS = "KAFKA_TLS"
	// EnvCAFile is a PEM file of the CAs that signed the brokers'
	// certificates; setting it implies TLS.
	EnvCAFile = "KAFKA_CA_FILE"
	// EnvMechanism is the SASL mechanism: plain, scram-sha-256 or
	// scram-sha-512 (any case); empty for none.
	EnvMechanism = "KAFKA_SASL_MECHANISM"
	// EnvUsername and EnvPassword are the SASL credentials.
	EnvUsername = "KAFKA_SASL_USERNAME"
	EnvPassword = "KAFKA_SASL_PASSWORD"
	// EnvAllowPlaintext "true" allows SASL PLAIN without TLS (clear-text
	// password): only on a network you trust.
	EnvAllowPlaintext = "KAFKA_SASL_ALLOW_PLAINTEXT"
)

// Names say where each setting came from, for error messages: the
// environment variables, or flags.
type Names struct {
	TLS, CAFile, Mechanism, Username, Password, AllowPlaintext string
}

// EnvNames are the Names of the environment variables.
var EnvNames = Names{
	TLS:            EnvTLS + "=true",
	CAFile:         "$" + EnvCAFile,
	Mechanism:      "$" + EnvMechanism,
	Username:       "$" + EnvUsername,
	Password:       "$" + EnvPassword,
	AllowPlaintext: EnvAllowPlaintext + "=true",
}

// Settings describe a connection to Kafka. The zero value is plaintext
// without SASL.
type Settings struct {
	// TLS connects over TLS, trusting the system roots unless CAFile is set.
	TLS bool
	// CAFile is a PEM file of the CAs that signed the brokers'
	// certificates. It implies TLS.
	CAFile string
	// Mechanism is the SASL mechanism: "" (none), "plain", "scram-sha-256"
	// or "scram-sha-512", in any case.
	Mechanism          string
	Username, Password string
	// AllowPlaintext allows SASL PLAIN without TLS, which sends the
	// password in clear text.
	AllowPlaintext bool
	// Names are used in error messages; zero means EnvNames.
	Names Names
}

// FromEnv reads Settings from the environment variables above, through
// getenv (os.Getenv). It fails only on a malformed boolean; Build checks
// the rest.
func FromEnv(getenv func(string) string) (Settings, error) {
	s := Settings{
		CAFile:    strings.TrimSpace(getenv(EnvCAFile)),
		Mechanism: strings.TrimSpace(getenv(EnvMechanism)),
		Username:  getenv(EnvUsername),
		Password:  getenv(EnvPassword),
	}
	var errs []error
	for _, b := range []struct {
		name string
		dst  *bool
	}{{EnvTLS, &s.TLS}, {EnvAllowPlaintext, &s.AllowPlaintext}} {
		v := strings.TrimSpace(getenv(b.name))
		if v == "" {
			continue
		}
		ok, err := strconv.ParseBool(v)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %q is not true or false", b.name, v))
			continue
		}
		*b.dst = ok
	}
	return s, errors.Join(errs...)
}

// Security is what Settings build: the TLS configuration and SASL mechanism
// of the connections, nil for none.
type Security struct {
	TLS  *tls.Config
	SASL sasl.Mechanism
}

// Build checks the settings and loads the CA file. It refuses an unknown
// mechanism, SASL without both credentials, a CA file without a
// certificate, and SASL PLAIN without TLS unless AllowPlaintext.
func (s Settings) Build() (Security, error) {
	n := s.Names
	if n == (Names{}) {
		n = EnvNames
	}
	var sec Security
	if s.TLS || s.CAFile != "" {
		sec.TLS = &tls.Config{MinVersion: tls.VersionTLS12}
		if s.CAFile != "" {
			pem, err := os.ReadFile(s.CAFile)
			if err != nil {
				return Security{}, fmt.Errorf("%s: %w", n.CAFile, err)
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				return Security{}, fmt.Errorf("%s: %s holds no PEM certificate", n.CAFile, s.CAFile)
			}
			sec.TLS.RootCAs = pool
		}
	}
	mechanism := strings.ToLower(s.Mechanism)
	if mechanism == "" {
		return sec, nil
	}
	if s.Username == "" || s.Password == "" {
		return Security{}, fmt.Errorf("%s needs a user (%s) and a password (%s)", n.Mechanism, n.Username, n.Password)
	}
	switch mechanism {
	case "plain":
		if sec.TLS == nil && !s.AllowPlaintext {
			return Security{}, fmt.Errorf("%s plain without TLS sends the password in clear text: connect over TLS (%s or %s), or set %s on a network you trust",
				n.Mechanism, n.TLS, n.CAFile, n.AllowPlaintext)
		}
		sec.SASL = plain.Mechanism{Username: s.Username, Password: s.Password}
	case "scram-sha-256", "scram-sha-512":
		algo := scram.SHA256
		if mechanism == "scram-sha-512" {
			algo = scram.SHA512
		}
		m, err := scram.Mechanism(algo, s.Username, s.Password)
		if err != nil {
			return Security{}, fmt.Errorf("%s: %w", n.Mechanism, err)
		}
		sec.SASL = m
	default:
		return Security{}, fmt.Errorf("%s: %q is not plain, scram-sha-256 or scram-sha-512", n.Mechanism, s.Mechanism)
	}
	return sec, nil
}

// IsZero reports whether the connections are plaintext without SASL.
func (s Security) IsZero() bool { return s.TLS == nil && s.SASL == nil }

// Dialer returns a Dialer with kafka.DefaultDialer's timeout and these
// settings, for kafka.DialContext, readers and consumer.Config.Dialer.
func (s Security) Dialer() *kafka.Dialer {
	return &kafka.Dialer{Timeout: 10 * time.Second, DualStack: true, TLS: s.TLS, SASLMechanism: s.SASL}
}

// Transport returns a Transport with these settings, for kafka.Client,
// kafka.Writer and outbox.RelayConfig.Transport. Its owner closes its idle
// connections.
func (s Security) Transport() *kafka.Transport {
	return &kafka.Transport{TLS: s.TLS, SASL: s.SASL}
}
