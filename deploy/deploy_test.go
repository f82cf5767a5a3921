// Package deploy_test checks the Kubernetes manifests (deploy/k8s), the
// Prometheus alert rules and the Grafana dashboard (deploy/monitoring) and
// the runbook they link to, without a cluster and without a YAML library.
//
// The manifests are rendered with `kubectl kustomize` when kubectl is on
// PATH, otherwise with `go run sigs.k8s.io/kustomize/kustomize/v5@<pinned>`
// (on a machine with empty module and build caches that downloads ~100 MB
// and builds for ~30 s; ~0.5 s per render once cached).
// EXACTLY_KUSTOMIZE=kubectl or EXACTLY_KUSTOMIZE=go forces one of them. If
// neither works the test fails; it never skips.
//
// The rendered YAML is kustomize's normalised output (two-space indents,
// "---" between documents), which the small line scanner below reads: enough
// to find each object's kind, name, maps like spec.selector.matchLabels, and
// the blocks under a key, and honest about what it checks.
package deploy_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/exactlyhq/exactly/consumer"
	"github.com/exactlyhq/exactly/outbox"
)

// kustomizeModule is the fallback renderer. v5.8.2 is the newest release
// whose go.mod accepts Go 1.26 (v5.8.3 requires Go 1.27).
const kustomizeModule = "sigs.k8s.io/kustomize/kustomize/v5@v5.8.2"

const namespace = "exactly-orders"

// programs are the Deployments, each running the image's binary of the
// same name.
var programs = []string{"orders-api", "payments-worker", "shipping-worker", "relay"}

// ---- rendering

var (
	renderMu    sync.Mutex
	renderCache = map[string]string{}
)

// render returns `kustomize build dir`.
func render(t *testing.T, dir string) string {
	t.Helper()
	abs, err := filepath.Abs(dir)
	if err != nil {
		t.Fatal(err)
	}
	renderMu.Lock()
	defer renderMu.Unlock()
	if out, ok := renderCache[abs]; ok {
		return out
	}
	force := os.Getenv("EXACTLY_KUSTOMIZE")
	if force != "" && force != "kubectl" && force != "go" {
		t.Fatalf("EXACTLY_KUSTOMIZE=%q: want kubectl, go or nothing", force)
	}
	var failures []string
	if force == "" || force == "kubectl" {
		if kubectl, err := exec.LookPath("kubectl"); err == nil {
			out, err := run(t, exec.Command(kubectl, "kustomize", abs))
			if err == nil {
				renderCache[abs] = out
				return out
			}
			failures = append(failures, fmt.Sprintf("kubectl kustomize %s: %v", dir, err))
		} else {
			failures = append(failures, "kubectl is not on PATH")
		}
	}
	if force == "" || force == "go" {
		if goBin, err := exec.LookPath("go"); err == nil {
			cmd := exec.Command(goBin, "run", kustomizeModule, "build", abs)
			cmd.Env = append(withoutModFlag(os.Environ()), "GOWORK=off")
			start := time.Now()
			out, err := run(t, cmd)
			if err == nil {
				t.Logf("rendered %s with go run %s in %v", dir, kustomizeModule, time.Since(start).Round(time.Millisecond))
				renderCache[abs] = out
				return out
			}
			failures = append(failures, fmt.Sprintf("go run %s build %s: %v", kustomizeModule, dir, err))
		} else {
			failures = append(failures, "go is not on PATH")
		}
	}
	t.Fatalf("cannot render %s with kustomize (install kubectl, or allow `go run` to download %s from the Go module proxy):\n  %s",
		dir, kustomizeModule, strings.Join(failures, "\n  "))
	return ""
}

func run(t *testing.T, cmd *exec.Cmd) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	c := exec.CommandContext(ctx, cmd.Path, cmd.Args[1:]...)
	c.Env = cmd.Env
	var stdout, stderr bytes.Buffer
	c.Stdout, c.Stderr = &stdout, &stderr
	if err := c.Run(); err != nil {
		return "", fmt.Errorf("%w: %s", err, strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), nil
}

// withoutModFlag drops -mod=... from GOFLAGS: `go run pkg@version` refuses
// -mod=vendor.
func withoutModFlag(env []string) []string {
	out := make([]string, 0, len(env))
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, "GOFLAGS="); ok {
			var keep []string
			for _, f := range strings.Fields(v) {
				if !strings.HasPrefix(f, "-mod=") {
					keep = append(keep, f)
				}
			}
			kv = "GOFLAGS=" + strings.Join(keep, " ")
		}
		out = append(out, kv)
	}
	return out
}

// ---- a line scanner for kustomize's YAML output

type object struct {
	kind, name, namespace string
	text                  string
	lines                 []string
}

func (o object) String() string { return o.kind + "/" + o.name }

func parse(t *testing.T, rendered string) []object {
	t.Helper()
	var objs []object
	for _, doc := range strings.Split(strings.TrimPrefix(rendered, "---\n"), "\n---\n") {
		if strings.TrimSpace(doc) == "" {
			continue
		}
		lines := strings.Split(doc, "\n")
		o := object{text: doc, lines: lines}
		o.kind = scalar(lines, "kind")
		o.name = scalar(lines, "metadata.name")
		o.namespace = scalar(lines, "metadata.namespace")
		if o.kind == "" || o.name == "" {
			t.Fatalf("a rendered document has no kind or metadata.name:\n%s", doc)
		}
		objs = append(objs, o)
	}
	return objs
}

var keyLine = regexp.MustCompile(`^( *)(- )?([^ #:][^:]*):(?: (.*))?$`)

// walk calls fn for every "key: value" line with the mapping keys leading
// to it. Sequence items add no key, so the keys spec, template, spec,
// containers, name lead to the name of any container. Paths below join the
// keys with dots.
func walk(lines []string, fn func(i int, keys []string, value string)) {
	type frame struct {
		indent int
		key    string
	}
	var stack []frame
	for i, l := range lines {
		m := keyLine.FindStringSubmatch(l)
		if m == nil {
			continue
		}
		indent := len(m[1])
		if m[2] != "" {
			indent += 2 // "- key:" is a key of the item, two columns in
		}
		for len(stack) > 0 && stack[len(stack)-1].indent >= indent {
			stack = stack[:len(stack)-1]
		}
		var keys []string
		for _, f := range stack {
			keys = append(keys, f.key)
		}
		key := strings.Trim(m[3], `"'`)
		keys = append(keys, key)
		fn(i, keys, strings.Trim(m[4], `"'`))
		stack = append(stack, frame{indent, key})
	}
}

// scalar returns the first value at path.
func scalar(lines []string, path string) string {
	v, found := "", false
	walk(lines, func(_ int, keys []string, value string) {
		if !found && strings.Join(keys, ".") == path {
			v, found = value, true
		}
	})
	return v
}

// values returns every value at path.
func values(lines []string, path string) []string {
	var vs []string
	walk(lines, func(_ int, keys []string, value string) {
		if strings.Join(keys, ".") == path {
			vs = append(vs, value)
		}
	})
	return vs
}

// mapping returns the scalar children of the mappings at path (keys may
// contain dots: app.kubernetes.io/name).
func mapping(lines []string, path string) map[string]string {
	m := map[string]string{}
	walk(lines, func(_ int, keys []string, value string) {
		n := len(keys) - 1
		if n > 0 && strings.Join(keys[:n], ".") == path && value != "" {
			if _, dup := m[keys[n]]; !dup {
				m[keys[n]] = value
			}
		}
	})
	return m
}

// blocks returns, for each line at path, the lines nested under it.
func blocks(lines []string, path string) [][]string {
	var out [][]string
	walk(lines, func(i int, keys []string, _ string) {
		if strings.Join(keys, ".") != path {
			return
		}
		indent := len(lines[i]) - len(strings.TrimLeft(lines[i], " -"))
		var b []string
		for _, l := range lines[i+1:] {
			trim := strings.TrimLeft(l, " ")
			if trim == "" {
				continue
			}
			// Deeper lines, or the items of an indentless sequence
			// ("command:" then "- a" in the same column).
			ind := len(l) - len(trim)
			if ind < indent || ind == indent && !strings.HasPrefix(trim, "- ") {
				break
			}
			b = append(b, l)
		}
		out = append(out, b)
	})
	return out
}

// sequence returns the items of a block sequence at path ("- a", "- b"),
// as kustomize prints command and args.
func sequence(lines []string, path string) []string {
	var items []string
	for _, b := range blocks(lines, path) {
		for _, l := range b {
			if v, ok := strings.CutPrefix(strings.TrimSpace(l), "- "); ok {
				items = append(items, strings.Trim(v, `"'`))
			}
		}
	}
	return items
}

func find(objs []object, kind, name string) (object, bool) {
	for _, o := range objs {
		if o.kind == kind && o.name == name {
			return o, true
		}
	}
	return object{}, false
}

func findPrefix(objs []object, kind, prefix string) (object, bool) {
	for _, o := range objs {
		if o.kind == kind && strings.HasPrefix(o.name, prefix) {
			return o, true
		}
	}
	return object{}, false
}

// subset reports whether every pair of sel is in labels.
func subset(sel, labels map[string]string) bool {
	if len(sel) == 0 {
		return false
	}
	for k, v := range sel {
		if labels[k] != v {
			return false
		}
	}
	return true
}

// ---- manifests

// overlay describes what one kustomization must render.
type overlay struct {
	dir       string
	secret    bool   // the placeholder or local Secret is rendered
	image     string // the image every program container runs
	databases bool   // an in-cluster Postgres and Kafka
}

var overlays = []overlay{
	{dir: "k8s/base", secret: true, image: "exactly-orders:dev"},
	{dir: "k8s/overlays/local", secret: true, image: "exactly-orders:dev", databases: true},
	{dir: "k8s/overlays/production", secret: false, image: "registry.example.com/exactly/exactly-orders:1.0.0"},
}

func TestManifests(t *testing.T) {
	for _, ov := range overlays {
		t.Run(strings.ReplaceAll(ov.dir, "/", "_"), func(t *testing.T) {
			objs := parse(t, render(t, ov.dir))
			checkManifests(t, ov, objs)
		})
	}
}

func checkManifests(t *testing.T, ov overlay, objs []object) {
	if _, ok := find(objs, "Namespace", namespace); !ok {
		t.Errorf("no Namespace %s", namespace)
	}
	for _, o := range objs {
		if o.kind != "Namespace" && o.namespace != namespace {
			t.Errorf("%s is in namespace %q, want %q (set namespace: in the kustomization that adds it)", o, o.namespace, namespace)
		}
	}
	if o, ok := find(objs, "ServiceAccount", "exactly-orders"); !ok {
		t.Error("no ServiceAccount exactly-orders")
	} else if scalar(o.lines, "automountServiceAccountToken") != "false" {
		t.Error("the ServiceAccount mounts an API token; the programs never call the Kubernetes API")
	}

	cm, ok := findPrefix(objs, "ConfigMap", "exactly-config")
	if !ok {
		t.Fatal("no ConfigMap exactly-config-*")
	}
	data := mapping(cm.lines, "data")
	for _, k := range []string{"KAFKA_BROKERS", "SHOP_SCHEMA", "SHOP_TOPIC_PREFIX", "METRICS_ADDR"} {
		if data[k] == "" {
			t.Errorf("ConfigMap %s has no %s", cm.name, k)
		}
	}

	secret, ok := find(objs, "Secret", "exactly-db")
	switch {
	case ov.secret && !ok:
		t.Error("no Secret exactly-db")
	case !ov.secret && ok:
		t.Error("the Secret exactly-db is rendered; this overlay expects it to be created out of band")
	case ok:
		sd := mapping(secret.lines, "stringData")
		for _, k := range []string{"DATABASE_URL", "MIGRATE_DATABASE_URL"} {
			if !strings.HasPrefix(sd[k], "postgres://") {
				t.Errorf("Secret exactly-db: %s = %q, want a postgres:// URL", k, sd[k])
			}
		}
		if ov.dir == "k8s/base" && !strings.Contains(sd["DATABASE_URL"], "sslmode=verify-full") {
			t.Errorf("the base DATABASE_URL example should use sslmode=verify-full, got %q", sd["DATABASE_URL"])
		}
		if ov.dir == "k8s/base" && !strings.Contains(secret.text, "CHANGE_ME") {
			t.Error("the base Secret should carry obvious placeholder credentials (CHANGE_ME)")
		}
	}

	// The migration Job and everything it needs carry the phase label, so
	// `kubectl apply -k ... -l exactly-orders/phase=migrate` applies them
	// first; the programs do not.
	job, ok := find(objs, "Job", "exactly-migrate")
	if !ok {
		t.Fatal("no Job exactly-migrate")
	}
	migrate := sequence(job.lines, "spec.template.spec.initContainers.command")
	if !slices.Equal(migrate, []string{"/usr/local/bin/exactly", "migrate", "up", "-schema", "$(SHOP_SCHEMA)"}) {
		t.Errorf("Job exactly-migrate: init container command %q, want exactly migrate up -schema $(SHOP_SCHEMA)", migrate)
	}
	if got := scalar(job.lines, "spec.template.spec.restartPolicy"); got != "Never" && got != "OnFailure" {
		t.Errorf("Job exactly-migrate: restartPolicy %q", got)
	}
	checkContainers(t, job, "spec.template.spec.initContainers", ov.image, false)
	checkContainers(t, job, "spec.template.spec.containers", ov.image, false)
	phased := []object{job, cm}
	for _, want := range [][2]string{{"Namespace", namespace}, {"ServiceAccount", "exactly-orders"}, {"Secret", "exactly-db"}, {"Deployment", "postgres"}, {"Deployment", "kafka"}} {
		if o, ok := find(objs, want[0], want[1]); ok {
			phased = append(phased, o)
		}
	}
	for _, o := range phased {
		if mapping(o.lines, "metadata.labels")["exactly-orders/phase"] != "migrate" {
			t.Errorf("%s lacks the label exactly-orders/phase=migrate: the first apply phase would miss it", o)
		}
	}

	// Daily retention of the tokens.
	if cj, ok := find(objs, "CronJob", "exactly-prune"); !ok {
		t.Error("no CronJob exactly-prune")
	} else {
		pod := "spec.jobTemplate.spec.template.spec."
		checkContainers(t, cj, pod+"initContainers", ov.image, false)
		checkContainers(t, cj, pod+"containers", ov.image, false)
		cmds := strings.Join(append(sequence(cj.lines, pod+"initContainers.command"), sequence(cj.lines, pod+"containers.command")...), " ")
		for _, want := range []string{"/usr/local/bin/exactly prune -schema $(SHOP_SCHEMA) -older-than $(INBOX_RETENTION)", "-inbox-table http_keys -older-than $(HTTP_KEYS_RETENTION)"} {
			if !strings.Contains(cmds, want) {
				t.Errorf("CronJob exactly-prune: commands %q lack %q", cmds, want)
			}
		}
		for _, k := range []string{"INBOX_RETENTION", "HTTP_KEYS_RETENTION"} {
			if data[k] == "" {
				t.Errorf("ConfigMap %s has no %s for the prune CronJob", cm.name, k)
			}
		}
	}

	for _, name := range programs {
		d, ok := find(objs, "Deployment", name)
		if !ok {
			t.Errorf("no Deployment %s", name)
			continue
		}
		if mapping(d.lines, "metadata.labels")["exactly-orders/phase"] != "" {
			t.Errorf("Deployment %s carries the migrate phase label: it would start before the migration", name)
		}
		checkContainers(t, d, "spec.template.spec.containers", ov.image, true)
		cmd := sequence(d.lines, "spec.template.spec.containers.command")
		if len(cmd) == 0 || cmd[0] != "/usr/local/bin/"+name {
			t.Errorf("Deployment %s runs %q, want /usr/local/bin/%s", name, cmd, name)
		}
		tmplLabels := mapping(d.lines, "spec.template.metadata.labels")
		if !subset(mapping(d.lines, "spec.selector.matchLabels"), tmplLabels) {
			t.Errorf("Deployment %s: spec.selector.matchLabels does not select its pod template labels %v", name, tmplLabels)
		}
		ann := mapping(d.lines, "spec.template.metadata.annotations")
		if ann["prometheus.io/scrape"] != "true" || ann["prometheus.io/port"] != "9090" || ann["prometheus.io/path"] != "/metrics" {
			t.Errorf("Deployment %s: Prometheus scrape annotations %v", name, ann)
		}
		if !slices.Contains(values(d.lines, "spec.template.spec.containers.ports.containerPort"), "9090") {
			t.Errorf("Deployment %s does not declare the metrics port 9090", name)
		}
		pdb, ok := find(objs, "PodDisruptionBudget", name)
		if !ok {
			t.Errorf("no PodDisruptionBudget %s", name)
		} else if !subset(mapping(pdb.lines, "spec.selector.matchLabels"), tmplLabels) {
			t.Errorf("PodDisruptionBudget %s selects none of the Deployment's pods", name)
		}
		pod := mapping(d.lines, "spec.template.spec.securityContext")
		if pod["runAsNonRoot"] != "true" {
			t.Errorf("Deployment %s: pod securityContext.runAsNonRoot is not true", name)
		}
	}
	// Workers must not outnumber partitions (shop.Partitions = 4).
	for _, name := range []string{"payments-worker", "shipping-worker"} {
		if d, ok := find(objs, "Deployment", name); ok {
			if r, err := strconv.Atoi(scalar(d.lines, "spec.replicas")); err != nil || r < 1 || r > 4 {
				t.Errorf("Deployment %s: replicas %q, want 1 to 4 (the topics have 4 partitions)", name, scalar(d.lines, "spec.replicas"))
			}
		}
	}

	svc, ok := find(objs, "Service", "orders-api")
	if !ok {
		t.Error("no Service orders-api")
	} else if api, ok := find(objs, "Deployment", "orders-api"); ok {
		if !subset(mapping(svc.lines, "spec.selector"), mapping(api.lines, "spec.template.metadata.labels")) {
			t.Error("Service orders-api selects none of the orders-api pods")
		}
		ports := values(api.lines, "spec.template.spec.containers.ports.name")
		for _, tp := range values(svc.lines, "spec.ports.targetPort") {
			if !slices.Contains(ports, tp) {
				t.Errorf("Service orders-api targets port %q, which the container does not name (%v)", tp, ports)
			}
		}
		if !slices.Contains(sequence(api.lines, "spec.template.spec.containers.args"), ":8080") {
			t.Error("orders-api is not told to listen on :8080 (-addr)")
		}
	}

	for _, dep := range []string{"postgres", "kafka"} {
		_, ok := find(objs, "Deployment", dep)
		if ok != ov.databases {
			t.Errorf("Deployment %s rendered: %v, want %v", dep, ok, ov.databases)
		}
	}

	checkNetworkPolicies(t, ov, objs, data)
	checkKafkaSecurity(t, ov, objs, data)
}

// checkContainers checks every container under path: image, envFrom of the
// ConfigMap and Secret, requests and limits, a restricted securityContext,
// and (for long-running programs) both probes.
func checkContainers(t *testing.T, o object, path, image string, probes bool) {
	t.Helper()
	n := len(values(o.lines, path+".name"))
	if n == 0 {
		t.Errorf("%s has no containers at %s", o, path)
		return
	}
	for _, img := range values(o.lines, path+".image") {
		if img != image {
			t.Errorf("%s: image %q, want %q", o, img, image)
		}
	}
	count := func(p string) int { return len(blocks(o.lines, path+"."+p)) }
	if probes && (count("readinessProbe") != n || count("livenessProbe") != n) {
		t.Errorf("%s: %d containers, %d readiness and %d liveness probes", o, n, count("readinessProbe"), count("livenessProbe"))
	}
	for _, kind := range []string{"requests", "limits"} {
		bs := blocks(o.lines, path+".resources."+kind)
		if len(bs) != n {
			t.Errorf("%s: %d containers but %d with resources.%s", o, n, len(bs), kind)
		}
		for _, b := range bs {
			text := strings.Join(b, "\n")
			if !strings.Contains(text, "memory:") || !strings.Contains(text, "cpu:") {
				t.Errorf("%s: resources.%s without cpu and memory: %q", o, kind, text)
			}
		}
	}
	sc := blocks(o.lines, path+".securityContext")
	if len(sc) != n {
		t.Errorf("%s: %d containers, %d securityContexts", o, n, len(sc))
	}
	for _, b := range sc {
		text := strings.Join(b, "\n")
		for _, want := range []string{"readOnlyRootFilesystem: true", "allowPrivilegeEscalation: false", "- ALL"} {
			if !strings.Contains(text, want) {
				t.Errorf("%s: container securityContext lacks %q", o, want)
			}
		}
	}
	cms := values(o.lines, path+".envFrom.configMapRef.name")
	secrets := values(o.lines, path+".envFrom.secretRef.name")
	if len(cms) != n || countOf(secrets, "exactly-db") != n {
		t.Errorf("%s: envFrom ConfigMap %v and Secret %v for %d containers", o, cms, secrets, n)
	}
	for _, c := range cms {
		if !strings.HasPrefix(c, "exactly-config") {
			t.Errorf("%s: envFrom ConfigMap %q", o, c)
		}
	}
	for _, s := range secrets {
		// exactly-kafka: checkKafkaSecurity checks who gets it.
		if s != "exactly-db" && s != "exactly-kafka" {
			t.Errorf("%s: envFrom Secret %q", o, s)
		}
	}
}

func countOf(list []string, v string) int {
	n := 0
	for _, s := range list {
		if s == v {
			n++
		}
	}
	return n
}

// TestMonitoringKustomization renders the ConfigMaps that ship the
// dashboard and the rules.
func TestMonitoringKustomization(t *testing.T) {
	objs := parse(t, render(t, "monitoring"))
	dash, ok := find(objs, "ConfigMap", "exactly-grafana-dashboard")
	if !ok {
		t.Fatal("no ConfigMap exactly-grafana-dashboard")
	}
	if mapping(dash.lines, "metadata.labels")["grafana_dashboard"] != "1" {
		t.Error("the dashboard ConfigMap lacks the grafana_dashboard label")
	}
	if _, ok := find(objs, "ConfigMap", "exactly-prometheus-rules"); !ok {
		t.Error("no ConfigMap exactly-prometheus-rules")
	}
}

// ---- metric names

// metricNames are the Prometheus names the OpenTelemetry Prometheus
// exporter (go.opentelemetry.io/otel/exporters/prometheus v0.69.0) gives our
// instruments: dots become underscores, unit "s" adds _seconds, counters
// add _total; histograms expose _bucket, _sum and _count. Verified against
// the exporter's /metrics output for a running consumer and relay.
func metricNames() map[string]bool {
	type inst struct {
		name, kind, unit string
	}
	insts := []inst{
		{consumer.MetricMessages, "counter", ""},
		{consumer.MetricRetries, "counter", ""},
		{consumer.MetricBatchDuration, "histogram", "s"},
		{consumer.MetricCommitErrors, "counter", ""},
		{consumer.MetricLag, "gauge", ""},
		{consumer.MetricSkipped, "counter", ""},
		{consumer.MetricInboxOldestAge, "gauge", "s"},
		{outbox.MetricPublished, "counter", ""},
		{outbox.MetricFailures, "counter", ""},
		{outbox.MetricDeadLettered, "counter", ""},
		{outbox.MetricLatency, "histogram", "s"},
		{outbox.MetricOwnedShards, "gauge", ""},
		{outbox.MetricBacklog, "gauge", ""},
		{outbox.MetricOldestAge, "gauge", "s"},
		{outbox.MetricShardOwned, "gauge", ""},
		{outbox.MetricRowsOutsideShards, "gauge", ""},
	}
	names := map[string]bool{}
	for _, i := range insts {
		n := strings.ReplaceAll(i.name, ".", "_")
		if i.unit == "s" {
			n += "_seconds"
		}
		switch i.kind {
		case "counter":
			names[n+"_total"] = true
		case "histogram":
			// The family name, as docs write it, and its series.
			names[n], names[n+"_bucket"], names[n+"_sum"], names[n+"_count"] = true, true, true, true
		default:
			names[n] = true
		}
	}
	return names
}

var metricToken = regexp.MustCompile(`exactly_(?:consumer|outbox|inbox)_[a-z_]+`)

// TestMetricNamesExist: every exactly_consumer_*, exactly_inbox_* and exactly_outbox_* name in
// the alerts, the dashboard and the docs is one the programs export.
func TestMetricNamesExist(t *testing.T) {
	known := metricNames()
	t.Logf("known metric names: %v", slices.Sorted(maps.Keys(known)))
	for _, f := range []string{"monitoring/alerts.yaml", "monitoring/alerts_test.yaml", "monitoring/dashboard.json", "../docs/runbook.md", "../docs/deploy.md"} {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Error(err)
			continue
		}
		for _, tok := range metricToken.FindAllString(string(b), -1) {
			tok = strings.TrimRight(tok, "_") // "exactly_outbox_latency_seconds_*"
			if !known[tok] {
				t.Errorf("%s mentions %s, which no instrument exports", f, tok)
			}
		}
	}
}

// ---- alerts

type rule struct {
	alert, expr, forDur, severity, runbook string
}

// alertRules reads the alerting rules of a Prometheus rules file.
func alertRules(t *testing.T, path string) []rule {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(b), "\n")
	if !slices.ContainsFunc(lines, func(l string) bool { return strings.HasPrefix(l, "groups:") }) {
		t.Fatalf("%s has no top-level groups:", path)
	}
	var rules []rule
	for _, blk := range ruleBlocks(lines) {
		r := rule{
			alert:    scalar(blk, "alert"),
			forDur:   scalar(blk, "for"),
			severity: scalar(blk, "labels.severity"),
			runbook:  scalar(blk, "annotations.runbook_url"),
		}
		for _, b := range blocks(blk, "expr") {
			r.expr += strings.Join(b, "\n")
		}
		r.expr += " " + scalar(blk, "expr")
		if r.alert != "" {
			rules = append(rules, r)
		}
	}
	return rules
}

// ruleBlocks splits the rules of every group into their own lines, with the
// rule's keys at column 0.
func ruleBlocks(lines []string) [][]string {
	var out [][]string
	var cur []string
	indent := -1
	for _, l := range lines {
		trim := strings.TrimLeft(l, " ")
		ind := len(l) - len(trim)
		if strings.HasPrefix(trim, "- alert:") || strings.HasPrefix(trim, "- record:") {
			if cur != nil {
				out = append(out, cur)
			}
			indent = ind + 2
			cur = []string{trim[2:]}
			continue
		}
		if cur == nil {
			continue
		}
		if trim != "" && ind < indent {
			out = append(out, cur)
			cur, indent = nil, -1
			continue
		}
		if len(l) >= indent {
			cur = append(cur, l[indent:])
		} else {
			cur = append(cur, "")
		}
	}
	if cur != nil {
		out = append(out, cur)
	}
	return out
}

// requiredAlerts maps each alert to what its expression must watch.
var requiredAlerts = map[string][]string{
	"ExactlyConsumerLagHigh":            {"exactly_consumer_lag"},
	"ExactlyConsumerStalled":            {"exactly_consumer_lag", "exactly_consumer_messages_total"},
	"ExactlyConsumerDeadLetters":        {`exactly_consumer_messages_total{outcome="dead_lettered"}`, "rate("},
	"ExactlyConsumerRetriesSpiking":     {"exactly_consumer_retries_total"},
	"ExactlyConsumerTransientErrors":    {`exactly_consumer_retries_total{kind="transient"}`},
	"ExactlyConsumerOffsetCommitErrors": {"exactly_consumer_offset_commit_errors_total"},
	"ExactlyConsumerMessagesSkipped":    {"exactly_consumer_skipped_total"},
	"ExactlyConsumerBatchesSlow":        {"exactly_consumer_batch_duration_seconds_sum", "exactly_consumer_batch_duration_seconds_count"},
	"ExactlyInboxRetentionStalled":      {"max by (scope) (exactly_inbox_oldest_age_seconds)"},
	"ExactlyOutboxOldestRowAge":         {"exactly_outbox_oldest_age_seconds"},
	"ExactlyOutboxBacklogHigh":          {"max by (table, shard) (exactly_outbox_backlog)"},
	"ExactlyOutboxShardUnowned":         {"exactly_outbox_shard_owned", "== 0"},
	"ExactlyOutboxRelaysMissing":        {"absent(exactly_outbox_shard_owned)"},
	"ExactlyOutboxPublishFailing":       {"exactly_outbox_publish_failures_total"},
	"ExactlyOutboxDeadLetters":          {"exactly_outbox_dead_lettered_total", "rate("},
}

func TestAlertRules(t *testing.T) {
	rules := alertRules(t, "monitoring/alerts.yaml")
	runbook, err := os.ReadFile("../docs/runbook.md")
	if err != nil {
		t.Fatal(err)
	}
	anchors := headingAnchors(string(runbook))
	byName := map[string][]rule{}
	for _, r := range rules {
		byName[r.alert] = append(byName[r.alert], r)
		if r.severity != "warning" && r.severity != "critical" {
			t.Errorf("%s: severity %q, want warning or critical", r.alert, r.severity)
		}
		anchor, ok := strings.CutPrefix(r.runbook, "https://github.com/exactlyhq/exactly/blob/main/docs/runbook.md#")
		if !ok || !anchors[anchor] {
			t.Errorf("%s: runbook_url %q does not point at a heading of docs/runbook.md", r.alert, r.runbook)
		}
		if _, ok := requiredAlerts[r.alert]; !ok {
			t.Errorf("%s is not in requiredAlerts: add it there and to docs/runbook.md", r.alert)
		}
	}
	for name, wants := range requiredAlerts {
		rs := byName[name]
		if len(rs) == 0 {
			t.Errorf("alert %s is missing", name)
			continue
		}
		for _, r := range rs {
			for _, w := range wants {
				if !strings.Contains(r.expr, w) {
					t.Errorf("alert %s: expr %q does not contain %q", name, r.expr, w)
				}
			}
		}
	}
	if rs := byName["ExactlyOutboxShardUnowned"]; len(rs) > 0 && rs[0].forDur != "1m" {
		t.Errorf("ExactlyOutboxShardUnowned: for %q, want 1m", rs[0].forDur)
	}
	sev := map[string]bool{}
	for _, r := range byName["ExactlyOutboxOldestRowAge"] {
		sev[r.severity] = true
	}
	if !sev["warning"] || !sev["critical"] {
		t.Errorf("ExactlyOutboxOldestRowAge should have a warning and a critical rule, has %v", sev)
	}
}

// headingAnchors returns GitHub's anchors of the markdown headings.
func headingAnchors(md string) map[string]bool {
	anchors := map[string]bool{}
	drop := regexp.MustCompile(`[^a-z0-9 _-]`)
	for _, l := range strings.Split(md, "\n") {
		if !strings.HasPrefix(l, "#") {
			continue
		}
		h := strings.ToLower(strings.TrimSpace(strings.TrimLeft(l, "#")))
		anchors[strings.ReplaceAll(drop.ReplaceAllString(h, ""), " ", "-")] = true
	}
	return anchors
}

// ---- dashboard

type panel struct {
	ID      int     `json:"id"`
	Type    string  `json:"type"`
	Title   string  `json:"title"`
	Panels  []panel `json:"panels"`
	Targets []struct {
		Expr string `json:"expr"`
	} `json:"targets"`
	Datasource *struct {
		UID string `json:"uid"`
	} `json:"datasource"`
}

func TestDashboard(t *testing.T) {
	b, err := os.ReadFile("monitoring/dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		UID       string  `json:"uid"`
		Title     string  `json:"title"`
		Panels    []panel `json:"panels"`
		Templates struct {
			List []struct {
				Name string `json:"name"`
			} `json:"list"`
		} `json:"templating"`
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(&dash); err != nil {
		t.Fatalf("dashboard.json is not valid JSON: %v", err)
	}
	if !json.Valid(b) {
		t.Fatal("dashboard.json is not valid JSON")
	}
	if dash.UID == "" || dash.Title == "" {
		t.Error("the dashboard needs a uid and a title")
	}
	vars := map[string]bool{}
	for _, v := range dash.Templates.List {
		vars[v.Name] = true
	}
	var exprs []string
	ids := map[int]string{}
	var visit func([]panel)
	visit = func(ps []panel) {
		for _, p := range ps {
			if other, dup := ids[p.ID]; dup {
				t.Errorf("panels %q and %q share id %d", other, p.Title, p.ID)
			}
			ids[p.ID] = p.Title
			if len(p.Targets) > 0 && (p.Datasource == nil || p.Datasource.UID != "${datasource}") {
				t.Errorf("panel %q does not use the ${datasource} variable", p.Title)
			}
			for _, tg := range p.Targets {
				if strings.TrimSpace(tg.Expr) == "" {
					t.Errorf("panel %q has an empty query", p.Title)
				}
				for _, v := range regexp.MustCompile(`\$(\w+)`).FindAllStringSubmatch(tg.Expr, -1) {
					if !vars[v[1]] && !strings.HasPrefix(v[1], "__") {
						t.Errorf("panel %q uses $%s, which is not a dashboard variable", p.Title, v[1])
					}
				}
				exprs = append(exprs, tg.Expr)
			}
			visit(p.Panels)
		}
	}
	visit(dash.Panels)
	all := strings.Join(exprs, "\n")
	for _, m := range []string{
		// what the alerts watch
		"exactly_consumer_lag", "exactly_outbox_oldest_age_seconds", "exactly_outbox_backlog",
		`outcome="dead_lettered"`, "exactly_outbox_dead_lettered_total", "exactly_consumer_retries_total",
		"exactly_outbox_shard_owned", "exactly_consumer_offset_commit_errors_total", "exactly_outbox_publish_failures_total",
		// throughput and latency
		`outcome="duplicate"`, "exactly_consumer_messages_total", "exactly_outbox_published_total",
		"exactly_consumer_batch_duration_seconds_bucket", "exactly_outbox_latency_seconds_bucket", "exactly_outbox_owned_shards",
	} {
		if !strings.Contains(all, m) {
			t.Errorf("no dashboard panel queries %s", m)
		}
	}
}

// ---- docs

// TestDocLinks: the relative links of docs/runbook.md and docs/deploy.md
// reach existing files and headings.
func TestDocLinks(t *testing.T) {
	link := regexp.MustCompile(`\]\(([^)\s]*)\)`)
	for _, doc := range []string{"../docs/runbook.md", "../docs/deploy.md"} {
		b, err := os.ReadFile(doc)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range link.FindAllStringSubmatch(string(b), -1) {
			target := m[1]
			if strings.Contains(target, "://") {
				continue
			}
			file, anchor, _ := strings.Cut(target, "#")
			path := doc
			if file != "" {
				path = filepath.Join(filepath.Dir(doc), file)
			}
			if _, err := os.Stat(path); err != nil {
				t.Errorf("%s links to %s: %v", doc, target, err)
				continue
			}
			if anchor == "" {
				continue
			}
			md, err := os.ReadFile(path)
			if err != nil {
				t.Errorf("%s links to %s: %v", doc, target, err)
				continue
			}
			if !headingAnchors(string(md))[anchor] {
				t.Errorf("%s links to %s: no such heading", doc, target)
			}
		}
	}
}
