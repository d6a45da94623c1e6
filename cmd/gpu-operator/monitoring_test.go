package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	dto "github.com/prometheus/client_model/go"
	kubefake "k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/tools/record"
	"sigs.k8s.io/yaml"

	"github.com/solanyn/gpu-operator/pkg/controller"
	tgpfake "github.com/solanyn/gpu-operator/pkg/generated/clientset/versioned/fake"
	"github.com/solanyn/gpu-operator/pkg/operator"
	"github.com/solanyn/gpu-operator/pkg/testenv"
)

// The monitoring assets in manifests/monitoring may only query metrics the
// operator exports: a renamed metric must break this test, not an alert in
// production that silently never fires.

// prometheusSynthetic are series Prometheus itself writes for every scrape
// target; the operator does not export them.
var prometheusSynthetic = map[string]bool{"up": true}

// exportedMetrics returns the name and type of every metric family the
// operator binary can export.
//
// It builds the registry the way runOperator does (the Go and process
// collectors, the workqueue metrics, and whatever operator.NewController
// registers) through a Registerer that also remembers each collector.
// Gathering alone is not enough: a vector with no children yet (gpu_operator_launches_total
// before the first launch) and a custom collector with nothing to report
// (gpu_operator_hourly_spend_dollars with no machine running) emit no
// samples, so Gather leaves them out. Every collector does describe all its
// metrics, though, so the remembered collectors are asked for their
// descriptors. A Desc has no accessor for its name, so each one is read back
// the way Prometheus reads it: a constant metric of that descriptor is
// gathered from a scratch registry, which yields the family's name.
func exportedMetrics(t *testing.T) map[string]dto.MetricType {
	t.Helper()
	registry := prometheus.NewRegistry()
	rec := &recordingRegisterer{Registerer: registry}
	// As runOperator does; workqueue.SetProvider is left out because it is
	// process-global and only decides whether the queue's children exist,
	// which the descriptors below cover.
	rec.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	controller.NewWorkqueueMetrics(rec)
	if _, _, err := operator.NewController(operator.Options{
		KubeClient: kubefake.NewClientset(),
		Client:     tgpfake.NewClientset(),
		Recorder:   record.NewFakeRecorder(16),
		Registry:   rec,
	}); err != nil {
		t.Fatal(err)
	}

	out := map[string]dto.MetricType{}
	families, err := registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		out[f.GetName()] = f.GetType()
	}
	for _, c := range rec.collectors {
		// Histograms are the only collectors whose series carry suffixes.
		typ := dto.MetricType_GAUGE
		switch c.(type) {
		case prometheus.Histogram, *prometheus.HistogramVec:
			typ = dto.MetricType_HISTOGRAM
		}
		descs := make(chan *prometheus.Desc)
		go func() { c.Describe(descs); close(descs) }()
		for d := range descs {
			name := descName(t, d)
			if _, seen := out[name]; !seen {
				out[name] = typ
			}
		}
	}
	return out
}

// recordingRegisterer registers on the wrapped Registerer and remembers
// every collector it registered.
type recordingRegisterer struct {
	prometheus.Registerer
	collectors []prometheus.Collector
}

func (r *recordingRegisterer) Register(c prometheus.Collector) error {
	if err := r.Registerer.Register(c); err != nil {
		return err
	}
	r.collectors = append(r.collectors, c)
	return nil
}

func (r *recordingRegisterer) MustRegister(cs ...prometheus.Collector) {
	for _, c := range cs {
		if err := r.Register(c); err != nil {
			panic(err)
		}
	}
}

// descName returns the metric name of a descriptor: it gathers one constant
// sample of it, with as many label values as it has variable labels.
func descName(t *testing.T, d *prometheus.Desc) string {
	t.Helper()
	if err := d.Err(); err != nil {
		t.Fatalf("invalid descriptor %s: %v", d, err)
	}
	for n := 0; n <= 32; n++ {
		m, err := prometheus.NewConstMetric(d, prometheus.UntypedValue, 0, make([]string, n)...)
		if err != nil {
			continue // wrong number of label values
		}
		scratch := prometheus.NewRegistry()
		scratch.MustRegister(constCollector{m})
		families, err := scratch.Gather()
		if err != nil || len(families) != 1 {
			t.Fatalf("gathering a sample of %s: %v", d, err)
		}
		return families[0].GetName()
	}
	t.Fatalf("descriptor %s takes more than 32 label values", d)
	return ""
}

// constCollector collects one metric and describes nothing, which makes it
// an unchecked collector.
type constCollector struct{ m prometheus.Metric }

func (constCollector) Describe(chan<- *prometheus.Desc)      {}
func (c constCollector) Collect(ch chan<- prometheus.Metric) { ch <- c.m }

// promqlFunctions are PromQL's functions and aggregation operators.
var promqlFunctions = setOf(
	// Aggregation operators.
	"sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values",
	"bottomk", "topk", "quantile", "limitk", "limit_ratio",
	// Functions.
	"abs", "absent", "absent_over_time", "ceil", "changes", "clamp", "clamp_max", "clamp_min",
	"day_of_month", "day_of_week", "day_of_year", "days_in_month", "delta", "deriv", "exp", "floor",
	"histogram_avg", "histogram_count", "histogram_fraction", "histogram_quantile", "histogram_stddev",
	"histogram_stdvar", "histogram_sum", "holt_winters", "double_exponential_smoothing", "hour", "idelta",
	"increase", "irate", "label_join", "label_replace", "ln", "log2", "log10", "minute", "month",
	"predict_linear", "rate", "resets", "round", "scalar", "sgn", "sort", "sort_desc", "sort_by_label",
	"sort_by_label_desc", "sqrt", "time", "timestamp", "vector", "year", "avg_over_time", "min_over_time",
	"max_over_time", "sum_over_time", "count_over_time", "quantile_over_time", "stddev_over_time",
	"stdvar_over_time", "last_over_time", "present_over_time", "mad_over_time", "acos", "acosh", "asin",
	"asinh", "atan", "atanh", "cos", "cosh", "sin", "sinh", "tan", "tanh", "deg", "rad", "pi",
	"info",
)

// promqlKeywords are PromQL's binary and modifier keywords and literals.
var promqlKeywords = setOf("and", "or", "unless", "atan2", "bool", "offset", "by", "without",
	"on", "ignoring", "group_left", "group_right", "inf", "nan")

func setOf(s ...string) map[string]bool {
	m := make(map[string]bool, len(s))
	for _, v := range s {
		m[v] = true
	}
	return m
}

var (
	// Grafana variables: $name, ${name[:format]}, [[name]].
	grafanaVar = regexp.MustCompile(`\$\{[^}]*\}|\$[a-zA-Z_][a-zA-Z0-9_]*|\[\[[^\]]*\]\]`)
	// String literals: label values and regexes.
	stringLit = regexp.MustCompile(`"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|` + "`[^`]*`")
	// Label matchers and range or subquery selectors.
	braces   = regexp.MustCompile(`\{[^{}]*\}`)
	brackets = regexp.MustCompile(`\[[^\[\]]*\]`)
	// Grouping and vector matching label lists: by (a, b), on(a), group_left(c).
	grouping = regexp.MustCompile(`\b(by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)`)
	// Offsets: offset 5m, offset -1h.
	offset = regexp.MustCompile(`\boffset\s+-?[0-9a-zA-Z]+`)
	// Numbers, including durations as bare numbers, hex and exponents.
	number = regexp.MustCompile(`\b(?:0[xX][0-9a-fA-F]+|[0-9]+(?:\.[0-9]*)?(?:[eE][+-]?[0-9]+)?)[a-zA-Z]*`)
	// Grafana's label_values(selector, label) templating query.
	labelValues = regexp.MustCompile(`^\s*label_values\(\s*(.+?)\s*,\s*[a-zA-Z_][a-zA-Z0-9_]*\s*\)\s*$`)
	// Identifiers, each with whether an opening parenthesis follows.
	identifier = regexp.MustCompile(`[a-zA-Z_:][a-zA-Z0-9_:]*(\s*\()?`)
)

// metricNames returns the metric names a PromQL expression selects: its
// identifiers once string literals, Grafana variables, label matchers,
// ranges, grouping label lists, offsets and numbers are removed, less the
// keywords. An identifier followed by "(" must be a known function.
func metricNames(expr string) ([]string, error) {
	s := grafanaVar.ReplaceAllString(expr, "")
	s = stringLit.ReplaceAllString(s, `""`)
	s = braces.ReplaceAllString(s, " ")
	s = brackets.ReplaceAllString(s, " ")
	s = grouping.ReplaceAllString(s, " ")
	s = offset.ReplaceAllString(s, " ")
	s = number.ReplaceAllString(s, " ")
	var names []string
	for _, m := range identifier.FindAllStringSubmatch(s, -1) {
		name := strings.TrimRight(strings.TrimSuffix(strings.TrimSpace(m[0]), "("), " \t\n")
		switch {
		case m[1] != "":
			if !promqlFunctions[name] {
				return nil, fmt.Errorf("unknown function %s( in %q", name, expr)
			}
		case promqlKeywords[name]:
		default:
			names = append(names, name)
		}
	}
	return names, nil
}

// checkMetric reports whether a referenced name is exported: as is, as a
// histogram's _bucket, _sum or _count series, or as Prometheus's own up.
func checkMetric(name string, exported map[string]dto.MetricType) error {
	if _, ok := exported[name]; ok || prometheusSynthetic[name] {
		return nil
	}
	for _, suffix := range []string{"_bucket", "_sum", "_count"} {
		base, ok := strings.CutSuffix(name, suffix)
		if !ok {
			continue
		}
		switch exported[base] {
		case dto.MetricType_HISTOGRAM, dto.MetricType_GAUGE_HISTOGRAM:
			return nil
		case dto.MetricType_SUMMARY:
			if suffix != "_bucket" {
				return nil
			}
		}
	}
	return fmt.Errorf("metric %s is not exported by the operator", name)
}

// query is one PromQL expression of a monitoring asset and where it is.
type query struct{ where, expr string }

func monitoringDir(t *testing.T) string {
	t.Helper()
	root, err := testenv.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	return filepath.Join(root, "manifests", "monitoring")
}

// prometheusRule is the part of a PrometheusRule the tests read.
type prometheusRule struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Metadata   struct {
		Name      string            `json:"name"`
		Namespace string            `json:"namespace"`
		Labels    map[string]string `json:"labels"`
	} `json:"metadata"`
	Spec struct {
		Groups []struct {
			Name  string `json:"name"`
			Rules []struct {
				Alert       string            `json:"alert"`
				Record      string            `json:"record"`
				Expr        string            `json:"expr"`
				For         string            `json:"for"`
				Labels      map[string]string `json:"labels"`
				Annotations map[string]string `json:"annotations"`
			} `json:"rules"`
		} `json:"groups"`
	} `json:"spec"`
}

func loadRules(t *testing.T) prometheusRule {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(monitoringDir(t), "prometheusrule.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var pr prometheusRule
	if err := yaml.UnmarshalStrict(data, &pr); err != nil {
		t.Fatalf("prometheusrule.yaml: %v", err)
	}
	return pr
}

func ruleQueries(t *testing.T) []query {
	t.Helper()
	var qs []query
	for _, g := range loadRules(t).Spec.Groups {
		for _, r := range g.Rules {
			qs = append(qs, query{"prometheusrule.yaml alert " + r.Alert, r.Expr})
		}
	}
	return qs
}

// dashboardQueries returns every panel target's expression (rows nest
// panels) and the templating variables' queries.
func dashboardQueries(t *testing.T) []query {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(monitoringDir(t), "grafana-dashboard.json"))
	if err != nil {
		t.Fatal(err)
	}
	type panel struct {
		Title   string `json:"title"`
		Type    string `json:"type"`
		Targets []struct {
			Expr string `json:"expr"`
		} `json:"targets"`
		Panels []json.RawMessage `json:"panels"`
	}
	var dash struct {
		Panels     []json.RawMessage `json:"panels"`
		Templating struct {
			List []struct {
				Name  string          `json:"name"`
				Type  string          `json:"type"`
				Query json.RawMessage `json:"query"`
			} `json:"list"`
		} `json:"templating"`
	}
	if err := json.Unmarshal(data, &dash); err != nil {
		t.Fatalf("grafana-dashboard.json: %v", err)
	}
	var qs []query
	var walk func([]json.RawMessage)
	walk = func(raw []json.RawMessage) {
		for _, r := range raw {
			var p panel
			if err := json.Unmarshal(r, &p); err != nil {
				t.Fatal(err)
			}
			if p.Type != "row" && len(p.Targets) == 0 {
				t.Errorf("dashboard panel %q has no query", p.Title)
			}
			for _, tg := range p.Targets {
				qs = append(qs, query{"dashboard panel " + p.Title, tg.Expr})
			}
			walk(p.Panels)
		}
	}
	walk(dash.Panels)
	for _, v := range dash.Templating.List {
		if v.Type != "query" {
			continue
		}
		// The query is a string or {"query": "..."}, by Grafana version.
		var q struct {
			Query string `json:"query"`
		}
		if err := json.Unmarshal(v.Query, &q.Query); err != nil {
			if err := json.Unmarshal(v.Query, &q); err != nil {
				t.Fatalf("variable %s: %v", v.Name, err)
			}
		}
		// label_values(selector, label) is Grafana's: check the selector.
		expr := q.Query
		if m := labelValues.FindStringSubmatch(expr); m != nil {
			expr = m[1]
		}
		qs = append(qs, query{"dashboard variable " + v.Name, expr})
	}
	return qs
}

func TestMonitoringAssetsUseExportedMetrics(t *testing.T) {
	exported := exportedMetrics(t)
	// The exporter side must be complete for the check to mean anything:
	// these are never observed by a controller that has done nothing.
	for _, name := range []string{"gpu_operator_launches_total", "gpu_operator_hourly_spend_dollars",
		"gpu_operator_time_to_ready_seconds", "workqueue_depth", "go_goroutines", "process_cpu_seconds_total"} {
		if _, ok := exported[name]; !ok {
			t.Errorf("%s missing from the exported metrics", name)
		}
	}
	if exported["gpu_operator_time_to_ready_seconds"] != dto.MetricType_HISTOGRAM {
		t.Errorf("gpu_operator_time_to_ready_seconds is %v, want a histogram", exported["gpu_operator_time_to_ready_seconds"])
	}

	queries := append(ruleQueries(t), dashboardQueries(t)...)
	referenced := map[string]bool{}
	for _, q := range queries {
		if strings.TrimSpace(q.expr) == "" {
			t.Errorf("%s: empty expression", q.where)
			continue
		}
		names, err := metricNames(q.expr)
		if err != nil {
			t.Errorf("%s: %v", q.where, err)
			continue
		}
		if len(names) == 0 {
			t.Errorf("%s: %q selects no metric", q.where, q.expr)
		}
		for _, n := range names {
			referenced[n] = true
			if err := checkMetric(n, exported); err != nil {
				t.Errorf("%s: %v", q.where, err)
			}
		}
	}
	// What the brief asks the assets to show must be there.
	for _, name := range []string{"gpu_operator_requests", "gpu_operator_interruptions_total", "gpu_operator_orphans_terminated_total",
		"gpu_operator_provider_api_errors_total", "gpu_operator_provider_api_calls_total", "gpu_operator_catalog_stale",
		"gpu_operator_hourly_spend_dollars", "gpu_operator_cost_dollars_total", "gpu_operator_time_to_ready_seconds_bucket",
		"gpu_operator_launches_total", "gpu_operator_unavailable_offerings", "workqueue_depth", "up"} {
		if !referenced[name] {
			t.Errorf("no alert or panel uses %s", name)
		}
	}
	t.Logf("%d expressions reference %d metrics", len(queries), len(referenced))
}

func TestMetricCheckRejectsUnknownMetrics(t *testing.T) {
	exported := map[string]dto.MetricType{
		"foo_seconds": dto.MetricType_HISTOGRAM,
		"bar_total":   dto.MetricType_COUNTER,
	}
	for expr, want := range map[string]error{
		`histogram_quantile(0.9, sum by (le) (rate(foo_seconds_bucket{job="x"}[5m])))`:    nil,
		`sum(rate(bar_total[$__rate_interval])) / sum(rate(foo_seconds_count[5m])) > 0.2`: nil,
		`absent(up{job="gpu-operator-metrics"} == 1)`:                                     nil,
		`sum(rate(bar_totals[5m]))`:                                                       fmt.Errorf("metric bar_totals is not exported by the operator"),
		`bar_total_bucket`:                                                                fmt.Errorf("metric bar_total_bucket is not exported by the operator"),
		`rat(bar_total[5m])`:                                                              fmt.Errorf(`unknown function rat( in "rat(bar_total[5m])"`),
	} {
		names, err := metricNames(expr)
		if err == nil {
			for _, n := range names {
				if err = checkMetric(n, exported); err != nil {
					break
				}
			}
		}
		if fmt.Sprint(err) != fmt.Sprint(want) {
			t.Errorf("%s: error %v, want %v", expr, err, want)
		}
	}
}

func TestMetricNames(t *testing.T) {
	for expr, want := range map[string][]string{
		`sum by (provider) (rate(gpu_operator_provider_api_errors_total{provider=~"$provider"}[5m])) / on (provider) group_left sum by (provider) (rate(gpu_operator_provider_api_calls_total[5m])) > 0.2`: {
			"gpu_operator_provider_api_errors_total", "gpu_operator_provider_api_calls_total"},
		`histogram_quantile(0.99, sum(rate(x_seconds_bucket[${__rate_interval}])) without (pod))`:   {"x_seconds_bucket"},
		`time() - max(a:recorded:rule offset 1h) and b unless c{l="and or"} * 1e3 + 0x1F`:           {"a:recorded:rule", "b", "c"},
		`max_over_time(gpu_operator_requests{phase="Pending"}[1h:5m]) == bool 1 or vector(0) > inf`: {"gpu_operator_requests"},
	} {
		got, err := metricNames(expr)
		if err != nil {
			t.Errorf("%s: %v", expr, err)
			continue
		}
		sort.Strings(got)
		sort.Strings(want)
		if !slices.Equal(got, want) {
			t.Errorf("metricNames(%s) = %v, want %v", expr, got, want)
		}
	}
}

func TestPrometheusRuleAlerts(t *testing.T) {
	pr := loadRules(t)
	if pr.APIVersion != "monitoring.coreos.com/v1" || pr.Kind != "PrometheusRule" || pr.Metadata.Namespace != "gpu-operator" {
		t.Errorf("%s %s in %q, want monitoring.coreos.com/v1 PrometheusRule in gpu-operator", pr.APIVersion, pr.Kind, pr.Metadata.Namespace)
	}
	alerts := map[string]string{}
	for _, g := range pr.Spec.Groups {
		for _, r := range g.Rules {
			if r.Alert == "" {
				t.Errorf("group %s: a rule without an alert name", g.Name)
				continue
			}
			alerts[r.Alert] = r.Expr
			switch r.Labels["severity"] {
			case "critical", "warning", "info":
			default:
				t.Errorf("%s: severity %q, want critical, warning or info", r.Alert, r.Labels["severity"])
			}
			if r.Annotations["summary"] == "" || r.Annotations["description"] == "" {
				t.Errorf("%s: needs summary and description annotations", r.Alert)
			}
		}
	}
	for alert, fragment := range map[string]string{
		"GPUOperatorDown":                  "absent(",
		"GPUOperatorRequestsStuckPending":  `gpu_operator_requests{phase="Pending"}`,
		"GPUOperatorRepeatedInterruptions": "increase(gpu_operator_interruptions_total[1h])) > 3",
		"GPUOperatorOrphansTerminated":     "increase(gpu_operator_orphans_terminated_total[30m])) > 0",
		"GPUOperatorProviderErrorRate":     "> 0.2",
		"GPUOperatorCatalogStale":          "gpu_operator_catalog_stale) == 1",
		"GPUOperatorSpendHigh":             "gpu_operator_hourly_spend_dollars)) > 50",
	} {
		if expr, ok := alerts[alert]; !ok || !strings.Contains(expr, fragment) {
			t.Errorf("alert %s: expr %q, want one containing %q", alert, expr, fragment)
		}
	}
}

// TestServiceMonitorSelectsMetricsService checks the ServiceMonitor against
// the Service in manifests/40-service.yaml: namespace, labels and port name.
func TestServiceMonitorSelectsMetricsService(t *testing.T) {
	read := func(path string, v any) {
		t.Helper()
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if err := yaml.Unmarshal(data, v); err != nil {
			t.Fatalf("%s: %v", path, err)
		}
	}
	var sm struct {
		APIVersion string `json:"apiVersion"`
		Kind       string `json:"kind"`
		Spec       struct {
			Selector struct {
				MatchLabels map[string]string `json:"matchLabels"`
			} `json:"selector"`
			NamespaceSelector struct {
				MatchNames []string `json:"matchNames"`
			} `json:"namespaceSelector"`
			Endpoints []struct {
				Port string `json:"port"`
				Path string `json:"path"`
			} `json:"endpoints"`
		} `json:"spec"`
	}
	read(filepath.Join(monitoringDir(t), "servicemonitor.yaml"), &sm)
	var svc struct {
		Metadata struct {
			Namespace string            `json:"namespace"`
			Labels    map[string]string `json:"labels"`
		} `json:"metadata"`
		Spec struct {
			Ports []struct {
				Name string `json:"name"`
			} `json:"ports"`
		} `json:"spec"`
	}
	read(filepath.Join(filepath.Dir(monitoringDir(t)), "40-service.yaml"), &svc)

	if sm.APIVersion != "monitoring.coreos.com/v1" || sm.Kind != "ServiceMonitor" {
		t.Errorf("%s %s, want monitoring.coreos.com/v1 ServiceMonitor", sm.APIVersion, sm.Kind)
	}
	if len(sm.Spec.Selector.MatchLabels) == 0 {
		t.Error("the ServiceMonitor selects every Service")
	}
	for k, v := range sm.Spec.Selector.MatchLabels {
		if svc.Metadata.Labels[k] != v {
			t.Errorf("selector %s=%s does not match the Service's labels %v", k, v, svc.Metadata.Labels)
		}
	}
	if !slices.Equal(sm.Spec.NamespaceSelector.MatchNames, []string{svc.Metadata.Namespace}) {
		t.Errorf("namespaces %v, want [%s]", sm.Spec.NamespaceSelector.MatchNames, svc.Metadata.Namespace)
	}
	if len(sm.Spec.Endpoints) != 1 || sm.Spec.Endpoints[0].Path != "/metrics" ||
		!slices.ContainsFunc(svc.Spec.Ports, func(p struct {
			Name string `json:"name"`
		}) bool {
			return p.Name == sm.Spec.Endpoints[0].Port
		}) {
		t.Errorf("endpoints %+v, want the Service's metrics port at /metrics (ports %+v)", sm.Spec.Endpoints, svc.Spec.Ports)
	}
}
