// Package kafkatest gives each test its own topic on a real Kafka broker.
package kafkatest

import (
	"bytes"
	"cmp"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/exactlyhq/exactly/internal/pgtest"
	"github.com/exactlyhq/exactly/internal/services"
)

// BrokersDefault is the broker the local services scripts start.
const BrokersDefault = "127.0.0.1:9092"

// Brokers returns KAFKA_BROKERS split at commas, or BrokersDefault.
func Brokers() []string {
	return strings.Split(cmp.Or(os.Getenv("KAFKA_BROKERS"), BrokersDefault), ",")
}

// The SASL_PLAINTEXT listener of the local broker (deploy/local/kafka.sh):
// mechanism PLAIN, one user. A test fixture, not a secret.
const (
	SASLBrokersDefault = "127.0.0.1:9094"
	SASLUser           = "exactly"
	SASLPassword       = "exactly-secret"
)

// SASLBrokers returns KAFKA_SASL_BROKERS split at commas, or
// SASLBrokersDefault.
func SASLBrokers() []string {
	return strings.Split(cmp.Or(os.Getenv("KAFKA_SASL_BROKERS"), SASLBrokersDefault), ",")
}

// TLSBrokersDefault is the SASL_SSL listener of the local broker: the SASL
// user above, over TLS with a certificate of a throwaway CA
// (deploy/local/tls.sh).
const TLSBrokersDefault = "127.0.0.1:9095"

// TLSBrokers returns KAFKA_TLS_BROKERS split at commas, or TLSBrokersDefault.
func TLSBrokers() []string {
	return strings.Split(cmp.Or(os.Getenv("KAFKA_TLS_BROKERS"), TLSBrokersDefault), ",")
}

// TLSCAFile returns KAFKA_TLS_CA, or the CA certificate deploy/local/kafka.sh
// made in the state directory ($EXACTLY_STATE_DIR, default .local in the
// repository).
func TLSCAFile(tb testing.TB) string {
	if f := os.Getenv("KAFKA_TLS_CA"); f != "" {
		return f
	}
	return filepath.Join(stateDir(tb), "kafka", "tls", "ca.pem")
}

// stateDir is where deploy/local keeps the services' files:
// $EXACTLY_STATE_DIR, default .local in the repository.
func stateDir(tb testing.TB) string {
	state := cmp.Or(os.Getenv("EXACTLY_STATE_DIR"), ".local")
	if !filepath.IsAbs(state) {
		state = filepath.Join(services.RepoRoot(tb), state) // make runs the scripts from the root
	}
	return state
}

// EndOffset returns the offset after the last record of a partition
// (control records included).
func EndOffset(tb testing.TB, topic string, partition int) int64 {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := kafka.DialLeader(ctx, "tcp", Brokers()[0], topic, partition)
	if err != nil {
		tb.Fatalf("kafkatest: dial leader of %s/%d: %v", topic, partition, err)
	}
	defer conn.Close()
	end, err := conn.ReadLastOffset()
	if err != nil {
		tb.Fatalf("kafkatest: last offset of %s/%d: %v", topic, partition, err)
	}
	return end
}

// ProduceTransactions writes to topic with Kafka's Java client, which can
// produce transactions (kafka-go cannot), using the broker's own jars. Each
// op is kind:count with kind plain, commit or abort; record i has key
// k<i%3>, the header Idempotency-Key prefix-<i> and the value kind
// (java/TxProducer.java). It fails the test if the producer fails.
func ProduceTransactions(tb testing.TB, topic, prefix string, ops ...string) {
	tb.Helper()
	java(tb, append([]string{
		"-cp", filepath.Join(stateDir(tb), "kafka", "libs", "*"),
		filepath.Join(services.RepoRoot(tb), "internal", "kafkatest", "java", "TxProducer.java"),
		Brokers()[0], topic, prefix,
	}, ops...)...)
}

// HoldTransaction writes a transaction of n records to topic (values
// "commit", tokens prefix-0..n-1) and leaves it open: it returns once the
// records are in the log, and commit commits it. The test fails if the
// producer fails or the transaction is not committed by the test's end.
func HoldTransaction(tb testing.TB, topic, prefix string, n int) (commit func()) {
	tb.Helper()
	gate := filepath.Join(tb.TempDir(), "commit")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	cmd := exec.CommandContext(ctx, "java", "-Xmx256m",
		"-Dlog4j2.configurationFile="+filepath.Join(stateDir(tb), "kafka", "tools-log4j2.properties"),
		"-cp", filepath.Join(stateDir(tb), "kafka", "libs", "*"),
		filepath.Join(services.RepoRoot(tb), "internal", "kafkatest", "java", "TxProducer.java"),
		Brokers()[0], topic, prefix, fmt.Sprintf("hold:%d:%s", n, gate))
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		cancel()
		tb.Fatalf("kafkatest: start the transactional producer: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	tb.Cleanup(func() {
		cancel()
		<-done
	})
	for {
		if _, err := os.Stat(gate + ".ready"); err == nil {
			break
		}
		select {
		case err := <-done:
			tb.Fatalf("kafkatest: the transactional producer exited before its transaction was written: %v\n%s", err, out.String())
		case <-time.After(50 * time.Millisecond):
		}
	}
	return func() {
		tb.Helper()
		if err := os.WriteFile(gate, nil, 0o600); err != nil {
			tb.Fatal(err)
		}
		if err := <-done; err != nil {
			tb.Fatalf("kafkatest: the transactional producer: %v\n%s", err, out.String())
		}
		done <- nil // for the cleanup
	}
}

// DeleteRecords deletes the records of a partition before offset, as
// retention does, with Kafka's own tool (kafka-go has no DeleteRecords).
func DeleteRecords(tb testing.TB, topic string, partition int, offset int64) {
	tb.Helper()
	spec := filepath.Join(tb.TempDir(), "delete.json")
	json := fmt.Sprintf(`{"version":1,"partitions":[{"topic":%q,"partition":%d,"offset":%d}]}`, topic, partition, offset)
	if err := os.WriteFile(spec, []byte(json), 0o600); err != nil {
		tb.Fatal(err)
	}
	java(tb, "-cp", filepath.Join(stateDir(tb), "kafka", "libs", "*"), "org.apache.kafka.tools.DeleteRecordsCommand",
		"--bootstrap-server", Brokers()[0], "--offset-json-file", spec)
}

// java runs the JVM with the tools' logging configuration and fails the
// test if it fails.
func java(tb testing.TB, args ...string) {
	tb.Helper()
	args = append([]string{"-Xmx256m", "-Dlog4j2.configurationFile=" + filepath.Join(stateDir(tb), "kafka", "tools-log4j2.properties")}, args...)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if out, err := exec.CommandContext(ctx, "java", args...).CombinedOutput(); err != nil {
		tb.Fatalf("kafkatest: java %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// TLSConfig returns a client TLS config that trusts only TLSCAFile.
func TLSConfig(tb testing.TB) *tls.Config {
	tb.Helper()
	pem, err := os.ReadFile(TLSCAFile(tb))
	if err != nil {
		tb.Fatalf("kafkatest: the test CA of the TLS listener (make services writes it): %v", err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(pem) {
		tb.Fatalf("kafkatest: no certificate in %s", TLSCAFile(tb))
	}
	return &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}
}

// SelfSignedCA returns the PEM certificate of a CA made for the test, which
// trusts nothing the local broker serves.
func SelfSignedCA(tb testing.TB) []byte {
	tb.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		tb.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

// Listener is one of the local broker's SASL listeners.
type Listener struct {
	Name    string
	Brokers []string
	TLS     *tls.Config // trusting TLSCAFile; nil for SASL_PLAINTEXT
}

// SASLListeners returns the broker's SASL_PLAINTEXT and SASL_SSL listeners.
func SASLListeners(tb testing.TB) []Listener {
	return []Listener{
		{Name: "plaintext", Brokers: SASLBrokers()},
		{Name: "tls", Brokers: TLSBrokers(), TLS: TLSConfig(tb)},
	}
}

// Topic creates a topic with a random name, the given partitions and topic
// configs, and deletes it when the test ends. It fails the test, with a
// hint, when no broker answers.
func Topic(tb testing.TB, partitions int, configs ...kafka.ConfigEntry) string {
	tb.Helper()
	name := "test-" + pgtest.RandomSuffix()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := CreateTopic(ctx, name, partitions, configs...); err != nil {
		tb.Fatalf("kafkatest: %v (is Kafka running? `make services`)", err)
	}
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_ = DeleteTopic(ctx, name)
	})
	return name
}

// CreateTopic creates topic with the given partitions (replication factor
// 1) and topic configs, and waits until every partition has a leader, so
// that the first produce and fetch do not race its creation. Benchmarks use
// it too.
func CreateTopic(ctx context.Context, topic string, partitions int, configs ...kafka.ConfigEntry) error {
	conn, err := controller(ctx)
	if err != nil {
		return fmt.Errorf("find the Kafka controller at %v: %w", Brokers(), err)
	}
	defer conn.Close()
	if err := conn.CreateTopics(kafka.TopicConfig{Topic: topic, NumPartitions: partitions, ReplicationFactor: 1, ConfigEntries: configs}); err != nil {
		return fmt.Errorf("create topic %s: %w", topic, err)
	}
	for {
		ps, err := conn.ReadPartitions(topic)
		if err == nil && len(ps) == partitions && allLed(ps) {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("topic %s not ready: %d partitions, %v", topic, len(ps), err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// DeleteTopic deletes topic; a topic that does not exist is not an error.
func DeleteTopic(ctx context.Context, topic string) error {
	conn, err := controller(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	if err := conn.DeleteTopics(topic); err != nil && !errors.Is(err, kafka.UnknownTopicOrPartition) {
		return fmt.Errorf("delete topic %s: %w", topic, err)
	}
	return nil
}

func allLed(ps []kafka.Partition) bool {
	for _, p := range ps {
		if p.Leader.ID < 0 || p.Leader.Host == "" {
			return false
		}
	}
	return true
}

func controller(ctx context.Context) (*kafka.Conn, error) {
	conn, err := kafka.DialContext(ctx, "tcp", Brokers()[0])
	if err != nil {
		return nil, err
	}
	c, err := conn.Controller()
	conn.Close()
	if err != nil {
		return nil, err
	}
	return kafka.DialContext(ctx, "tcp", net.JoinHostPort(c.Host, strconv.Itoa(c.Port)))
}

// Writer returns a synchronous writer that waits for all in-sync replicas
// and partitions by key hash like the Java client. It is closed when the
// test ends.
func Writer(tb testing.TB, topic string) *kafka.Writer {
	tb.Helper()
	transport := &kafka.Transport{}
	w := &kafka.Writer{
		Addr:         kafka.TCP(Brokers()...),
		Transport:    transport,
		Topic:        topic,
		Balancer:     &kafka.Murmur2Balancer{},
		RequiredAcks: kafka.RequireAll,
		BatchTimeout: time.Millisecond,
		BatchSize:    1000,
	}
	tb.Cleanup(func() {
		_ = w.Close()
		transport.CloseIdleConnections()
	})
	return w
}

// Produce writes msgs to w's topic and fails the test on an error that
// retrying cannot fix. A transient failure (a broker that just restarted, a
// leader election) is logged and the failed messages are written again until
// 60 s have passed: kafka-go's Writer does not retry a plain io.EOF from a
// connection the broker closed (segmentio/kafka-go#1352). A message that
// failed may still have been written, so after an outage a test must
// tolerate duplicates, as a consumer must. Each call writes at most w's
// BatchSize messages, one record batch per partition that Kafka takes or
// refuses whole: writing the failed ones again keeps each key's order.
func Produce(tb testing.TB, w *kafka.Writer, msgs ...kafka.Message) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for len(msgs) > 0 {
		n := min(len(msgs), cmp.Or(w.BatchSize, 100))
		failed, err := write(ctx, w, msgs[:n])
		switch {
		case err == nil:
			msgs = msgs[n:]
		case transient(err) && ctx.Err() == nil:
			tb.Logf("kafkatest: produce: %d of %d failed, writing them again: %v", len(failed), n, err)
			time.Sleep(100 * time.Millisecond)
			msgs = append(failed, msgs[n:]...)
		default:
			tb.Fatalf("kafkatest: produce: %d of %d failed: %v", len(failed), n, err)
		}
	}
}

// write writes msgs and returns the ones that failed with the first error.
func write(ctx context.Context, w *kafka.Writer, msgs []kafka.Message) ([]kafka.Message, error) {
	err := w.WriteMessages(ctx, msgs...)
	var werrs kafka.WriteErrors
	switch {
	case err == nil:
		return nil, nil
	case !errors.As(err, &werrs) || len(werrs) != len(msgs):
		return msgs, err
	}
	var failed []kafka.Message
	var first error
	for i, e := range werrs {
		if e != nil {
			failed = append(failed, msgs[i])
			first = cmp.Or(first, e)
		}
	}
	return failed, first
}

// transient reports whether retrying a write that failed with err may
// succeed.
func transient(err error) bool {
	var temporary interface{ Temporary() bool }
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) ||
		(errors.As(err, &temporary) && temporary.Temporary())
}

// Committed returns the group's committed offsets of topic by partition
// (partitions without a commit are absent).
func Committed(ctx context.Context, group, topic string, partitions int) (map[int]int64, error) {
	transport := &kafka.Transport{}
	defer transport.CloseIdleConnections()
	client := &kafka.Client{Addr: kafka.TCP(Brokers()...), Timeout: 10 * time.Second, Transport: transport}
	ps := make([]int, partitions)
	for i := range ps {
		ps[i] = i
	}
	resp, err := client.OffsetFetch(ctx, &kafka.OffsetFetchRequest{GroupID: group, Topics: map[string][]int{topic: ps}})
	if err != nil {
		return nil, err
	}
	if resp.Error != nil {
		return nil, resp.Error
	}
	out := map[int]int64{}
	for _, p := range resp.Topics[topic] {
		if p.Error != nil {
			return nil, p.Error
		}
		if p.CommittedOffset >= 0 {
			out[p.Partition] = p.CommittedOffset
		}
	}
	return out, nil
}

// ReadAll reads topic's partitions from the beginning until it holds at
// least n messages, and fails the test after timeout. Messages of one
// partition keep their order.
func ReadAll(tb testing.TB, topic string, partitions, n int, timeout time.Duration) []kafka.Message {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	type res struct {
		m   kafka.Message
		err error
	}
	ch := make(chan res)
	done := make(chan struct{})
	var readers []*kafka.Reader
	for p := range partitions {
		r := kafka.NewReader(kafka.ReaderConfig{Brokers: Brokers(), Topic: topic, Partition: p, MinBytes: 1, MaxBytes: 10 << 20, MaxWait: 100 * time.Millisecond})
		readers = append(readers, r)
		go func() {
			for {
				m, err := r.ReadMessage(ctx)
				select {
				case ch <- res{m, err}:
				case <-done:
					return
				}
				if err != nil {
					return
				}
			}
		}()
	}
	defer func() {
		close(done)
		for _, r := range readers {
			_ = r.Close()
		}
	}()
	var out []kafka.Message
	for len(out) < n {
		r := <-ch
		if r.err != nil {
			tb.Fatalf("kafkatest: read %s: have %d of %d messages: %v", topic, len(out), n, r.err)
		}
		out = append(out, r.m)
	}
	return out
}

// Header returns the value of the first header named key.
func Header(m kafka.Message, key string) string {
	for _, h := range m.Headers {
		if h.Key == key {
			return string(h.Value)
		}
	}
	return ""
}
