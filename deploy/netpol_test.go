package deploy_test

import (
	"fmt"
	"net"
	"path"
	"slices"
	"strings"
	"testing"

	"github.com/exactlyhq/exactly/internal/kafkasec"
)

// Who talks to what. Every pod of the pipeline uses Postgres; these use
// Kafka too (the migration Job's setup creates the topics); orders-api only
// writes the outbox.
var (
	pipelinePods = []string{"orders-api", "relay", "payments-worker", "shipping-worker", "exactly-migrate", "exactly-prune"}
	kafkaClients = []string{"relay", "payments-worker", "shipping-worker", "exactly-migrate"}
)

// ---- sequences of mappings

// items returns the items of the block sequences at path, each as lines
// whose keys start at column 0 (so scalar, mapping, values and items work
// on them as on an object).
func items(lines []string, at string) [][]string {
	var out [][]string
	for _, b := range blocks(lines, at) {
		indent := -1
		var cur []string
		for _, l := range b {
			trim := strings.TrimLeft(l, " ")
			ind := len(l) - len(trim)
			if indent < 0 && strings.HasPrefix(trim, "- ") {
				indent = ind
			}
			if indent < 0 {
				continue
			}
			if ind == indent && strings.HasPrefix(trim, "- ") {
				if cur != nil {
					out = append(out, cur)
				}
				cur = []string{trim[2:]}
				continue
			}
			if cur != nil && ind >= indent+2 {
				cur = append(cur, l[indent+2:])
			}
		}
		if cur != nil {
			out = append(out, cur)
		}
	}
	return out
}

// has reports whether a key exists at path (with or without a value).
func has(lines []string, at string) bool {
	found := false
	walk(lines, func(_ int, keys []string, _ string) {
		found = found || strings.Join(keys, ".") == at
	})
	return found
}

// ---- network policies

// selector is a label selector: matchLabels and matchExpressions. The
// empty selector selects everything.
type selector struct {
	labels map[string]string
	exprs  []expr
}

type expr struct {
	key, op string
	values  []string
}

func parseSelector(lines []string, at string) selector {
	s := selector{labels: mapping(lines, at+".matchLabels")}
	for _, e := range items(lines, at+".matchExpressions") {
		s.exprs = append(s.exprs, expr{key: scalar(e, "key"), op: scalar(e, "operator"), values: sequence(e, "values")})
	}
	return s
}

func (s selector) empty() bool { return len(s.labels) == 0 && len(s.exprs) == 0 }

func (s selector) matches(labels map[string]string) bool {
	for k, v := range s.labels {
		if labels[k] != v {
			return false
		}
	}
	for _, e := range s.exprs {
		v, ok := labels[e.key]
		switch e.op {
		case "In":
			if !ok || !slices.Contains(e.values, v) {
				return false
			}
		case "NotIn":
			if ok && slices.Contains(e.values, v) {
				return false
			}
		case "Exists":
			if !ok {
				return false
			}
		case "DoesNotExist":
			if ok {
				return false
			}
		default:
			return false
		}
	}
	return true
}

// peer is one item of from: or to:.
type peer struct {
	namespaces, pods *selector // nil when absent
	ipBlock          string
}

func (p peer) String() string {
	var parts []string
	if p.namespaces != nil {
		parts = append(parts, fmt.Sprintf("namespaces %v %v", p.namespaces.labels, p.namespaces.exprs))
	}
	if p.pods != nil {
		parts = append(parts, fmt.Sprintf("pods %v %v", p.pods.labels, p.pods.exprs))
	}
	if p.ipBlock != "" {
		parts = append(parts, "ipBlock "+p.ipBlock)
	}
	return "{" + strings.Join(parts, ", ") + "}"
}

// inNamespace reports whether the peer is exactly the namespace name (any
// pod of it, or only some).
func (p peer) inNamespace(name string) bool {
	return p.namespaces != nil && p.ipBlock == "" && p.namespaces.matches(map[string]string{"kubernetes.io/metadata.name": name}) &&
		!p.namespaces.matches(map[string]string{"kubernetes.io/metadata.name": name + "-not"})
}

// samePods reports whether the peer is pods of the policy's own namespace.
func (p peer) samePods() bool { return p.namespaces == nil && p.pods != nil && p.ipBlock == "" }

type port struct {
	port, protocol string
}

// npRule is one ingress or egress rule. No peers: any source or destination;
// no ports: every port.
type npRule struct {
	peers []peer
	ports []port
}

func (r npRule) allows(p port) bool {
	if len(r.ports) == 0 {
		return true
	}
	for _, q := range r.ports {
		if q.port == p.port && q.protocol == p.protocol {
			return true
		}
	}
	return false
}

type netpol struct {
	name             string
	pods             selector
	types            []string
	ingress, egress  []npRule
	hasIngressRules  bool
	hasEgressRules   bool
	phaseLabel       string
	selectsAWorkload bool
}

func parseRules(lines []string, at, peersKey string) []npRule {
	var rules []npRule
	for _, r := range items(lines, at) {
		var ru npRule
		for _, p := range items(r, peersKey) {
			var pe peer
			if has(p, "namespaceSelector") {
				s := parseSelector(p, "namespaceSelector")
				pe.namespaces = &s
			}
			if has(p, "podSelector") {
				s := parseSelector(p, "podSelector")
				pe.pods = &s
			}
			pe.ipBlock = scalar(p, "ipBlock.cidr")
			ru.peers = append(ru.peers, pe)
		}
		for _, p := range items(r, "ports") {
			ru.ports = append(ru.ports, port{port: scalar(p, "port"), protocol: cmpOr(scalar(p, "protocol"), "TCP")})
		}
		rules = append(rules, ru)
	}
	return rules
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

func parseNetpol(o object) netpol {
	return netpol{
		name:            o.name,
		pods:            parseSelector(o.lines, "spec.podSelector"),
		types:           sequence(o.lines, "spec.policyTypes"),
		ingress:         parseRules(o.lines, "spec.ingress", "from"),
		egress:          parseRules(o.lines, "spec.egress", "to"),
		hasIngressRules: has(o.lines, "spec.ingress"),
		hasEgressRules:  has(o.lines, "spec.egress"),
		phaseLabel:      mapping(o.lines, "metadata.labels")["exactly-orders/phase"],
	}
}

// workload is the pod template of a Deployment, Job or CronJob.
type workload struct {
	obj    object
	labels map[string]string
	ports  []string // containerPorts
}

func (w workload) name() string { return w.labels["app.kubernetes.io/name"] }

func workloads(objs []object) []workload {
	var ws []workload
	for _, o := range objs {
		var tmpl string
		switch o.kind {
		case "Deployment", "Job", "StatefulSet", "DaemonSet":
			tmpl = "spec.template"
		case "CronJob":
			tmpl = "spec.jobTemplate.spec.template"
		default:
			continue
		}
		ws = append(ws, workload{obj: o, labels: mapping(o.lines, tmpl+".metadata.labels"),
			ports: values(o.lines, tmpl+".spec.containers.ports.containerPort")})
	}
	return ws
}

// checkNetworkPolicies: a default deny of ingress and egress, and for each
// workload only the traffic it needs (see networkpolicy.yaml).
func checkNetworkPolicies(t *testing.T, ov overlay, objs []object, config map[string]string) {
	var pols []netpol
	for _, o := range objs {
		if o.kind == "NetworkPolicy" {
			pols = append(pols, parseNetpol(o))
		}
	}
	if len(pols) == 0 {
		t.Fatal("no NetworkPolicy")
	}
	deny := slices.IndexFunc(pols, func(p netpol) bool {
		return p.pods.empty() && slices.Contains(p.types, "Ingress") && slices.Contains(p.types, "Egress") && !p.hasIngressRules && !p.hasEgressRules
	})
	if deny < 0 {
		t.Error("no default-deny NetworkPolicy (podSelector: {}, policyTypes Ingress and Egress, no rules)")
	}
	for _, p := range pols {
		// The Job runs in the first apply phase: its rules must be there.
		if p.phaseLabel != "migrate" {
			t.Errorf("NetworkPolicy %s lacks exactly-orders/phase=migrate: the migration Job would run without it", p.name)
		}
		for _, ty := range p.types {
			if ty == "Ingress" && len(p.ingress) == 0 && p.hasIngressRules || ty == "Egress" && len(p.egress) == 0 && p.hasEgressRules {
				t.Errorf("NetworkPolicy %s: %s rules present but unreadable", p.name, ty)
			}
		}
	}

	// Kafka's ports, from the brokers the programs are given.
	var kafkaPorts []port
	for _, b := range strings.Split(config["KAFKA_BROKERS"], ",") {
		_, p, err := net.SplitHostPort(strings.TrimSpace(b))
		if err != nil {
			t.Errorf("KAFKA_BROKERS %q: %v", config["KAFKA_BROKERS"], err)
			continue
		}
		if !slices.Contains(kafkaPorts, port{p, "TCP"}) {
			kafkaPorts = append(kafkaPorts, port{p, "TCP"})
		}
	}

	ws := workloads(objs)
	var names []string
	for _, w := range ws {
		names = append(names, w.name())
	}
	for _, want := range pipelinePods {
		if !slices.Contains(names, want) {
			t.Errorf("no workload with pods named %s (the policies select pods by app.kubernetes.io/name)", want)
		}
	}
	for _, w := range ws {
		name := w.name()
		var ingress, egress []npRule
		var in, out bool
		for i, p := range pols {
			if !p.pods.matches(w.labels) {
				continue
			}
			pols[i].selectsAWorkload = true
			if slices.Contains(p.types, "Ingress") {
				in = true
				ingress = append(ingress, p.ingress...)
			}
			if slices.Contains(p.types, "Egress") {
				out = true
				egress = append(egress, p.egress...)
			}
		}
		if !in || !out {
			t.Errorf("%s (pods %s): no NetworkPolicy isolates its ingress (%v) or egress (%v)", w.obj, name, in, out)
			continue
		}

		// Ingress: exactly what the component serves.
		var wantIngress []port
		switch name {
		case "orders-api":
			wantIngress = []port{{"8080", "TCP"}, {"9090", "TCP"}}
		case "relay", "payments-worker", "shipping-worker":
			wantIngress = []port{{"9090", "TCP"}}
		case "postgres":
			wantIngress = []port{{"5432", "TCP"}}
		case "kafka":
			wantIngress = []port{{"9092", "TCP"}}
		}
		for _, r := range ingress {
			if len(r.ports) == 0 {
				t.Errorf("%s: an ingress rule allows every port", w.obj)
			}
			for _, p := range r.ports {
				if !slices.Contains(wantIngress, p) {
					t.Errorf("%s: ingress allowed on %s/%s, which it does not serve (want only %v)", w.obj, p.port, p.protocol, wantIngress)
				}
				if !slices.Contains(w.ports, p.port) {
					t.Errorf("%s: ingress allowed on port %s, which no container declares (%v)", w.obj, p.port, w.ports)
				}
			}
			for _, p := range r.peers {
				if p.ipBlock != "" {
					t.Errorf("%s: ingress from ipBlock %s", w.obj, p.ipBlock)
				}
			}
			switch {
			case r.allows(port{"9090", "TCP"}):
				// Metrics only from the monitoring namespace.
				if len(r.peers) == 0 {
					t.Errorf("%s: metrics port 9090 open to anyone", w.obj)
				}
				for _, p := range r.peers {
					if !p.inNamespace("monitoring") {
						t.Errorf("%s: metrics port 9090 open to %s, want the namespace monitoring only", w.obj, p)
					}
				}
			case name == "postgres" || name == "kafka":
				// Only from the pods of the pipeline that use it.
				clients := pipelinePods
				if name == "kafka" {
					clients = append(slices.Clone(kafkaClients), "kafka")
				}
				if len(r.peers) == 0 {
					t.Errorf("%s: open to anyone", w.obj)
				}
				for _, p := range r.peers {
					if !p.samePods() {
						t.Errorf("%s: ingress from %s, want pods of the namespace", w.obj, p)
						continue
					}
					for _, c := range append(slices.Clone(pipelinePods), "postgres", "kafka", "other") {
						if got, want := p.pods.matches(map[string]string{"app.kubernetes.io/name": c}), slices.Contains(clients, c); got != want {
							t.Errorf("%s: ingress from pods named %s: %v, want %v", w.obj, c, got, want)
						}
					}
				}
			}
		}
		for _, p := range wantIngress {
			if !slices.ContainsFunc(ingress, func(r npRule) bool { return r.allows(p) }) {
				t.Errorf("%s: no ingress rule lets traffic in on %s/%s", w.obj, p.port, p.protocol)
			}
		}
		if name == "orders-api" && !slices.ContainsFunc(ingress, func(r npRule) bool { return r.allows(port{"8080", "TCP"}) && len(r.peers) == 0 }) {
			t.Errorf("%s: the API port 8080 is not open to any source (Service, ingress controller)", w.obj)
		}

		// Egress: DNS for everyone, Postgres and Kafka for their clients,
		// nothing to every port.
		reaches := func(p port) bool { return slices.ContainsFunc(egress, func(r npRule) bool { return r.allows(p) }) }
		for _, r := range egress {
			if len(r.ports) == 0 && !(len(r.peers) > 0 && slices.IndexFunc(r.peers, func(p peer) bool { return !p.samePods() }) < 0) {
				t.Errorf("%s: an egress rule allows every port beyond the namespace's own pods", w.obj)
			}
		}
		dns := slices.ContainsFunc(egress, func(r npRule) bool {
			return r.allows(port{"53", "UDP"}) && r.allows(port{"53", "TCP"}) && slices.ContainsFunc(r.peers, func(p peer) bool {
				return p.inNamespace("kube-system") && p.pods != nil && p.pods.matches(map[string]string{"k8s-app": "kube-dns"})
			})
		})
		if !dns {
			t.Errorf("%s: no egress to kube-dns on 53/UDP and 53/TCP", w.obj)
		}
		if slices.Contains(pipelinePods, name) && !reaches(port{"5432", "TCP"}) {
			t.Errorf("%s: no egress to Postgres (5432/TCP)", w.obj)
		}
		for _, p := range kafkaPorts {
			if got, want := reaches(p), slices.Contains(kafkaClients, name) || name == "kafka"; got != want && slices.Contains(pipelinePods, name) {
				t.Errorf("%s: egress to Kafka (%s/TCP, from KAFKA_BROKERS) allowed: %v, want %v", w.obj, p.port, got, want)
			}
		}
		if (name == "postgres" || name == "kafka") && !ov.databases {
			t.Errorf("%s rendered in %s", w.obj, ov.dir)
		}
	}
	for _, p := range pols {
		if !p.selectsAWorkload {
			t.Errorf("NetworkPolicy %s selects no pod of any workload (a misspelt name?)", p.name)
		}
	}
}

// checkKafkaSecurity: the pods that use Kafka get the Secret exactly-kafka
// (KAFKA_SASL_USERNAME, KAFKA_SASL_PASSWORD) and the CA directory
// /etc/kafka-ca; the others do not. The configuration passes the programs'
// own checks (internal/kafkasec): SASL PLAIN never without TLS, never the
// explicit allowance. Production connects with TLS and SASL.
func checkKafkaSecurity(t *testing.T, ov overlay, objs []object, config map[string]string) {
	if v := config[kafkasec.EnvAllowPlaintext]; v != "" {
		t.Errorf("the ConfigMap sets %s=%s: SASL PLAIN without TLS has no place in a deployment", kafkasec.EnvAllowPlaintext, v)
	}
	s, err := kafkasec.FromEnv(func(k string) string {
		switch k {
		case kafkasec.EnvUsername, kafkasec.EnvPassword:
			return "from-the-secret"
		}
		return config[k]
	})
	if err != nil {
		t.Errorf("the programs would refuse the ConfigMap: %v", err)
	}
	if s.CAFile != "" { // not on this machine: its directory is checked below
		s.CAFile, s.TLS = "", true
	}
	if _, err := s.Build(); err != nil {
		t.Errorf("the programs would refuse the ConfigMap: %v", err)
	}
	if ov.dir == "k8s/overlays/production" && (config[kafkasec.EnvMechanism] == "" || config[kafkasec.EnvCAFile] == "" && config[kafkasec.EnvTLS] != "true") {
		t.Errorf("production connects to Kafka without TLS and SASL: %s=%q %s=%q %s=%q", kafkasec.EnvMechanism, config[kafkasec.EnvMechanism],
			kafkasec.EnvCAFile, config[kafkasec.EnvCAFile], kafkasec.EnvTLS, config[kafkasec.EnvTLS])
	}
	if _, ok := find(objs, "Secret", "exactly-kafka"); ok {
		t.Error("the Secret exactly-kafka is rendered; it is created out of band")
	}
	var caMap object
	if ca := config[kafkasec.EnvCAFile]; ca != "" {
		var ok bool
		if caMap, ok = findPrefix(objs, "ConfigMap", "exactly-kafka-ca"); !ok {
			t.Errorf("%s=%s, but no ConfigMap exactly-kafka-ca is rendered", kafkasec.EnvCAFile, ca)
		} else if mapping(caMap.lines, "data")[path.Base(ca)] == "" && !slices.Contains(blockKeys(caMap.lines, "data"), path.Base(ca)) {
			t.Errorf("%s=%s, but ConfigMap %s has no key %s", kafkasec.EnvCAFile, ca, caMap.name, path.Base(ca))
		}
		if path.Dir(ca) != "/etc/kafka-ca" {
			t.Errorf("%s=%s is not in /etc/kafka-ca, where the pods mount exactly-kafka-ca", kafkasec.EnvCAFile, ca)
		}
	}

	type pod struct {
		kind, name, spec string
		kafka            []string // containers that use Kafka
	}
	for _, p := range []pod{
		{"Deployment", "relay", "spec.template.spec", []string{"relay"}},
		{"Deployment", "payments-worker", "spec.template.spec", []string{"payments-worker"}},
		{"Deployment", "shipping-worker", "spec.template.spec", []string{"shipping-worker"}},
		{"Deployment", "orders-api", "spec.template.spec", nil},
		{"Job", "exactly-migrate", "spec.template.spec", []string{"setup"}},
		{"CronJob", "exactly-prune", "spec.jobTemplate.spec.template.spec", nil},
	} {
		o, ok := find(objs, p.kind, p.name)
		if !ok {
			continue // checkManifests reports it
		}
		caVolume := ""
		for _, v := range items(o.lines, p.spec+".volumes") {
			if strings.HasPrefix(scalar(v, "configMap.name"), "exactly-kafka-ca") {
				caVolume = scalar(v, "name")
				if scalar(v, "configMap.optional") != "true" && caMap.name == "" {
					t.Errorf("%s: volume %s needs a ConfigMap this overlay does not render", o, caVolume)
				}
			}
		}
		for _, key := range []string{"initContainers", "containers"} {
			for _, c := range items(o.lines, p.spec+"."+key) {
				name := scalar(c, "name")
				secret := slices.Contains(values(c, "envFrom.secretRef.name"), "exactly-kafka")
				mounted := false
				for _, m := range items(c, "volumeMounts") {
					if caVolume != "" && scalar(m, "name") == caVolume && scalar(m, "mountPath") == "/etc/kafka-ca" {
						mounted = true
					}
				}
				want := slices.Contains(p.kafka, name) && key == "containers"
				if secret != want || mounted != want {
					t.Errorf("%s container %s: Secret exactly-kafka %v, CA mounted at /etc/kafka-ca %v; want %v (it uses Kafka: %v)", o, name, secret, mounted, want, want)
				}
			}
		}
	}
}

// blockKeys returns the keys directly under path (a ConfigMap's data keys
// whose values are block scalars, like a PEM file).
func blockKeys(lines []string, at string) []string {
	var keys []string
	walk(lines, func(_ int, ks []string, _ string) {
		if len(ks) > 1 && strings.Join(ks[:len(ks)-1], ".") == at {
			keys = append(keys, ks[len(ks)-1])
		}
	})
	return keys
}
