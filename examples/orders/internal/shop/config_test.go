package shop_test

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/exactlyhq/exactly/examples/orders/internal/shop"
	"github.com/exactlyhq/exactly/internal/kafkatest"
	"github.com/exactlyhq/exactly/internal/pgtest"
)

// kafkaEnv are the variables of the Kafka connection; each test case starts
// with all of them empty.
var kafkaEnv = []string{"KAFKA_BROKERS", "KAFKA_TLS", "KAFKA_CA_FILE", "KAFKA_SASL_MECHANISM",
	"KAFKA_SASL_USERNAME", "KAFKA_SASL_PASSWORD", "KAFKA_SASL_ALLOW_PLAINTEXT"}

func setEnv(t *testing.T, kv ...string) {
	t.Helper()
	for _, k := range kafkaEnv {
		t.Setenv(k, "")
	}
	for i := 0; i < len(kv); i += 2 {
		t.Setenv(kv[i], kv[i+1])
	}
}

// TestFromEnvKafka: the TLS and SASL variables reach the workers' Dialer
// and the relay's Transport; plaintext leaves both nil (the defaults);
// SASL PLAIN without TLS is refused unless KAFKA_SASL_ALLOW_PLAINTEXT=true.
// Not parallel: it sets the environment.
func TestFromEnvKafka(t *testing.T) {
	ca := kafkatest.TLSCAFile(t)
	creds := []string{"KAFKA_SASL_USERNAME", "u", "KAFKA_SASL_PASSWORD", "p"}
	for _, tc := range []struct {
		name string
		env  []string
		tls  bool
		sasl string // mechanism name, "" for none
		err  string
	}{
		{name: "plaintext"},
		{name: "tls", env: []string{"KAFKA_TLS", "true"}, tls: true},
		{name: "sasl_ssl", env: append([]string{"KAFKA_CA_FILE", ca, "KAFKA_SASL_MECHANISM", "plain"}, creds...), tls: true, sasl: "PLAIN"},
		{name: "scram", env: append([]string{"KAFKA_TLS", "true", "KAFKA_SASL_MECHANISM", "scram-sha-512"}, creds...), tls: true, sasl: "SCRAM-SHA-512"},
		{name: "plain refused", env: append([]string{"KAFKA_SASL_MECHANISM", "plain"}, creds...), err: "KAFKA_SASL_MECHANISM plain without TLS sends the password in clear text"},
		{name: "plain allowed", env: append([]string{"KAFKA_SASL_MECHANISM", "plain", "KAFKA_SASL_ALLOW_PLAINTEXT", "true"}, creds...), sasl: "PLAIN"},
		{name: "no password", env: []string{"KAFKA_TLS", "true", "KAFKA_SASL_MECHANISM", "plain", "KAFKA_SASL_USERNAME", "u"}, err: "KAFKA_SASL_PASSWORD"},
		{name: "bad boolean", env: []string{"KAFKA_TLS", "on"}, err: "KAFKA_TLS"},
	} {
		setEnv(t, tc.env...)
		cfg, err := shop.FromEnv()
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
		pay, ship, tr := cfg.PaymentsConsumer().Dialer, cfg.ShippingConsumer().Dialer, cfg.Transport()
		if tc.tls || tc.sasl != "" {
			if pay == nil || ship == nil || tr == nil {
				t.Errorf("%s: Dialers %v %v, Transport %v; want all set", tc.name, pay, ship, tr)
				continue
			}
			name := ""
			if pay.SASLMechanism != nil {
				name = pay.SASLMechanism.Name()
			}
			if (pay.TLS != nil) != tc.tls || name != tc.sasl || ship.TLS != pay.TLS || ship.SASLMechanism != pay.SASLMechanism ||
				tr.TLS != pay.TLS || tr.SASL != pay.SASLMechanism {
				t.Errorf("%s: Dialer TLS %v SASL %q, Transport %+v; want TLS %v SASL %q in all", tc.name, pay.TLS != nil, name, tr, tc.tls, tc.sasl)
			}
		} else if pay != nil || ship != nil || tr != nil {
			t.Errorf("%s: plaintext, yet Dialers %v %v, Transport %v", tc.name, pay, ship, tr)
		}
	}
}

// TestSetupOverSASLSSL: setup and reset reach the local broker's SASL_SSL
// listener (127.0.0.1:9095, the test CA) with the settings FromEnv reads:
// the topics are created there with 4 partitions, then deleted. Not
// parallel: it sets the environment.
func TestSetupOverSASLSSL(t *testing.T) {
	plaintext := kafkatest.Brokers() // before KAFKA_BROKERS changes
	setEnv(t, "KAFKA_BROKERS", strings.Join(kafkatest.TLSBrokers(), ","), "KAFKA_CA_FILE", kafkatest.TLSCAFile(t),
		"KAFKA_SASL_MECHANISM", "plain", "KAFKA_SASL_USERNAME", kafkatest.SASLUser, "KAFKA_SASL_PASSWORD", kafkatest.SASLPassword)
	cfg, err := shop.FromEnv()
	if err != nil {
		t.Fatal(err)
	}
	pool := pgtest.Pool(t)
	names := shop.Names{Schema: pgtest.Schema(t, pool), TopicPrefix: "tlstest-" + pgtest.RandomSuffix() + "."}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	// Topics as the plaintext listener sees them: an independent view.
	partitions := func() map[string]int {
		tr := &kafka.Transport{}
		defer tr.CloseIdleConnections()
		cl := &kafka.Client{Addr: kafka.TCP(plaintext...), Transport: tr, Timeout: 10 * time.Second}
		md, err := cl.Metadata(ctx, &kafka.MetadataRequest{})
		if err != nil {
			t.Fatal(err)
		}
		got := map[string]int{}
		for _, tp := range md.Topics {
			if slices.Contains(names.Topics(), tp.Name) {
				got[tp.Name] = len(tp.Partitions)
			}
		}
		return got
	}
	t.Cleanup(func() { // when the test fails before Reset
		tr := &kafka.Transport{}
		defer tr.CloseIdleConnections()
		cl := &kafka.Client{Addr: kafka.TCP(plaintext...), Transport: tr, Timeout: 10 * time.Second}
		_, _ = cl.DeleteTopics(context.Background(), &kafka.DeleteTopicsRequest{Topics: names.Topics()})
	})
	if err := names.Setup(ctx, pool, cfg.Kafka); err != nil {
		t.Fatalf("setup over SASL_SSL: %v", err)
	}
	if got := partitions(); len(got) != 2 || got[names.OrdersPlaced()] != shop.Partitions || got[names.PaymentsCaptured()] != shop.Partitions {
		t.Fatalf("after setup over SASL_SSL the topics are %v, want %v with %d partitions each", got, names.Topics(), shop.Partitions)
	}
	if err := names.Reset(ctx, pool, cfg.Kafka); err != nil {
		t.Fatalf("reset over SASL_SSL: %v", err)
	}
	if got := partitions(); len(got) != 0 {
		t.Fatalf("after reset over SASL_SSL the topics are %v, want none", got)
	}

	// The same broker through a CA that did not sign its certificate.
	wrong := cfg.Kafka
	wrong.Security.TLS = wrong.Security.TLS.Clone()
	wrong.Security.TLS.RootCAs = nil // the system roots
	if err := names.Setup(ctx, pool, wrong); err == nil || !strings.Contains(err.Error(), "certificate signed by unknown authority") {
		t.Fatalf("setup with the system roots: %v, want the certificate refused", err)
	}
}
