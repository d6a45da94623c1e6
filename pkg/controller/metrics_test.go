package controller

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
)

// TestMetricsLint checks every operator metric against Prometheus' naming
// conventions (promlint), with one sample in each vector so all are gathered.
func TestMetricsLint(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := NewMetrics(reg, func() int { return 0 })
	wq := NewWorkqueueMetrics(reg)
	wq.NewAddsMetric(QueueName).Inc()
	wq.NewDepthMetric(QueueName).Inc()
	wq.NewLatencyMetric(QueueName).Observe(1)
	wq.NewWorkDurationMetric(QueueName).Observe(1)
	wq.NewRetriesMetric(QueueName).Inc()
	wq.NewUnfinishedWorkSecondsMetric(QueueName).Set(0)
	wq.NewLongestRunningProcessorSecondsMetric(QueueName).Set(0)
	m.Launches.WithLabelValues("runpod", "us-west-1", "true", "success").Inc()
	m.TimeToReady.Observe(1)
	m.observeCall("runpod", "launch", nil)
	m.ProviderErrors.WithLabelValues("runpod", "launch", "Transient").Inc()
	m.OfferPrice.WithLabelValues("runpod", "us-west-1", "RTX4090", "1", "spot").Set(0.2)
	m.Failovers.Inc()
	m.Interruptions.WithLabelValues("runpod", "us-west-1", "RTX4090").Inc()
	m.Cost.WithLabelValues("runpod", "RTX4090", "true").Add(1)
	m.OrphansTerminated.WithLabelValues("runpod").Inc()
	m.CatalogStale.WithLabelValues("runpod").Set(0)
	m.CatalogRefreshed.WithLabelValues("runpod").Set(1)
	m.SyncDuration.Observe(0.1)
	m.Rebids.WithLabelValues("vastai").Inc()
	m.SSHBootstraps.WithLabelValues("vastai", "success").Inc()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	if len(mfs) < 20 {
		t.Fatalf("gathered %d metric families, want every one", len(mfs))
	}
	problems, err := promlint.NewWithMetricFamilies(mfs).Lint()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("promlint: %s: %s", p.Metric, p.Text)
	}
}
