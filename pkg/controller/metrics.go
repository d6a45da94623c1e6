package controller

import (
	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/client-go/util/workqueue"

	tgpv1 "github.com/solanyn/gpu-operator/pkg/apis/tgp/v1"
	"github.com/solanyn/gpu-operator/pkg/providers"
)

// requestCollector exports gauges computed from the informer cache at
// scrape time: requests by phase and the hourly spend of launched machines.
type requestCollector struct{ c *Controller }

var (
	phaseDesc = prometheus.NewDesc("gpu_operator_requests", "GPURequests by phase.", []string{"phase"}, nil)
	spendDesc = prometheus.NewDesc("gpu_operator_hourly_spend_dollars", "Summed hourly price of the machines currently launched, by provider.", []string{"provider"}, nil)
)

func (rc *requestCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- phaseDesc
	ch <- spendDesc
}

func (rc *requestCollector) Collect(ch chan<- prometheus.Metric) {
	reqs, err := rc.c.requests.List(labelsEverything)
	if err != nil {
		return
	}
	phases := map[tgpv1.Phase]int{}
	for _, p := range []tgpv1.Phase{tgpv1.PhasePending, tgpv1.PhaseProvisioning, tgpv1.PhaseBooting, tgpv1.PhaseJoining,
		tgpv1.PhaseReady, tgpv1.PhaseInterrupted, tgpv1.PhaseTerminating, tgpv1.PhaseTerminated, tgpv1.PhaseFailed} {
		phases[p] = 0
	}
	spend := map[string]float64{}
	for _, r := range reqs {
		phase := r.Status.Phase
		if phase == "" {
			phase = tgpv1.PhasePending
		}
		phases[phase]++
		if billing(&r.Status) {
			spend[r.Status.Provider] += *r.Status.HourlyPrice
		}
	}
	for p, n := range phases {
		ch <- prometheus.MustNewConstMetric(phaseDesc, prometheus.GaugeValue, float64(n), string(p))
	}
	for p, v := range spend {
		ch <- prometheus.MustNewConstMetric(spendDesc, prometheus.GaugeValue, v, p)
	}
}

const namespace = "gpu_operator"

// Metrics are the operator's Prometheus metrics. Everything is registered on
// one registry handed in by the caller, so tests get a clean set each time.
type Metrics struct {
	Launches            *prometheus.CounterVec
	TimeToReady         prometheus.Histogram
	ProviderCalls       *prometheus.CounterVec
	ProviderErrors      *prometheus.CounterVec
	OfferPrice          *prometheus.GaugeVec
	Failovers           prometheus.Counter
	Interruptions       *prometheus.CounterVec
	Cost                *prometheus.CounterVec
	OrphansTerminated   *prometheus.CounterVec
	CatalogStale        *prometheus.GaugeVec
	CatalogRefreshed    *prometheus.GaugeVec
	UnavailableOffering prometheus.GaugeFunc
	SyncDuration        prometheus.Histogram
	Rebids              *prometheus.CounterVec
	SSHBootstraps       *prometheus.CounterVec
}

// NewMetrics creates and registers the metrics; unavailable reports the size
// of the unavailable-offerings cache.
func NewMetrics(reg prometheus.Registerer, unavailable func() int) *Metrics {
	m := &Metrics{
		Launches: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "launches_total",
			Help: "Launch calls by provider, region, capacity type and result (success or the error class).",
		}, []string{"provider", "region", "spot", "result"}),
		TimeToReady: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: namespace, Name: "time_to_ready_seconds",
			Help:    "Time from a GPURequest's creation to its first Ready.",
			Buckets: []float64{1, 5, 15, 30, 60, 120, 300, 600, 1200, 3600},
		}),
		ProviderCalls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "provider_api_calls_total",
			Help: "Provider API operations by provider and operation.",
		}, []string{"provider", "operation"}),
		ProviderErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "provider_api_errors_total",
			Help: "Failed provider API operations by provider, operation and error class.",
		}, []string{"provider", "operation", "class"}),
		OfferPrice: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: namespace, Name: "offer_price_dollars_per_hour",
			Help: "Lowest whole-machine price of the current offers by provider, region, GPU type, GPU count and capacity type.",
		}, []string{"provider", "region", "gpu_type", "gpu_count", "capacity_type"}),
		Failovers: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: namespace, Name: "failovers_total",
			Help: "Launches that failed over to the next ranked offer.",
		}),
		Interruptions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "interruptions_total",
			Help: "Machines lost to preemption, stops or disappearance, by provider, region and GPU type.",
		}, []string{"provider", "region", "gpu_type"}),
		Cost: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "cost_dollars_total",
			Help: "USD accrued by launched machines (hourly price times running time).",
		}, []string{"provider", "gpu_type", "spot"}),
		OrphansTerminated: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "orphans_terminated_total",
			Help: "Provider instances with the operator's name prefix that no GPURequest claimed, terminated by the collector.",
		}, []string{"provider"}),
		CatalogStale: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: namespace, Name: "catalog_stale",
			Help: "1 when the provider's latest catalog refresh failed and older offers are in use.",
		}, []string{"provider"}),
		CatalogRefreshed: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: namespace, Name: "catalog_last_success_timestamp_seconds",
			Help: "Unix time of the provider's last successful catalog refresh.",
		}, []string{"provider"}),
		UnavailableOffering: prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Namespace: namespace, Name: "unavailable_offerings",
			Help: "Offerings currently marked unavailable after a capacity, quota or provider failure.",
		}, func() float64 { return float64(unavailable()) }),
		SyncDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: namespace, Name: "sync_duration_seconds",
			Help:    "Duration of one GPURequest sync.",
			Buckets: prometheus.ExponentialBuckets(0.001, 4, 8),
		}),
		Rebids: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "rebids_total",
			Help: "Bids raised on outbid interruptible instances (bid markets: Vast.ai), by provider.",
		}, []string{"provider"}),
		SSHBootstraps: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "ssh_bootstraps_total",
			Help: "Bootstrap deliveries over SSH by provider and result (success, failed before the script started, script failed, interrupted).",
		}, []string{"provider", "result"}),
	}
	reg.MustRegister(m.Launches, m.TimeToReady, m.ProviderCalls, m.ProviderErrors,
		m.OfferPrice, m.Failovers, m.Interruptions, m.Cost, m.OrphansTerminated,
		m.CatalogStale, m.CatalogRefreshed, m.UnavailableOffering, m.SyncDuration, m.Rebids, m.SSHBootstraps)
	return m
}

// WorkqueueMetrics implements workqueue.MetricsProvider on a Prometheus
// registry, so the named queue's depth, latency and retries are exported
// as workqueue_* metrics.
type WorkqueueMetrics struct {
	depth                      *prometheus.GaugeVec
	addsTotal, retriesTotal    *prometheus.CounterVec
	latency, workDuration      *prometheus.HistogramVec
	unfinished, longestRunning *prometheus.GaugeVec
}

// NewWorkqueueMetrics registers the workqueue metrics on reg.
func NewWorkqueueMetrics(reg prometheus.Registerer) *WorkqueueMetrics {
	buckets := prometheus.ExponentialBuckets(10e-9, 10, 12)
	w := &WorkqueueMetrics{
		depth: prometheus.NewGaugeVec(prometheus.GaugeOpts{Subsystem: "workqueue", Name: "depth",
			Help: "Current depth of the workqueue."}, []string{"name"}),
		addsTotal: prometheus.NewCounterVec(prometheus.CounterOpts{Subsystem: "workqueue", Name: "adds_total",
			Help: "Total adds handled by the workqueue."}, []string{"name"}),
		retriesTotal: prometheus.NewCounterVec(prometheus.CounterOpts{Subsystem: "workqueue", Name: "retries_total",
			Help: "Total retries handled by the workqueue."}, []string{"name"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{Subsystem: "workqueue", Name: "queue_duration_seconds",
			Help: "How long an item stays in the workqueue before being processed.", Buckets: buckets}, []string{"name"}),
		workDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Subsystem: "workqueue", Name: "work_duration_seconds",
			Help: "How long processing an item from the workqueue takes.", Buckets: buckets}, []string{"name"}),
		unfinished: prometheus.NewGaugeVec(prometheus.GaugeOpts{Subsystem: "workqueue", Name: "unfinished_work_seconds",
			Help: "Seconds of work in progress not yet observed by work_duration."}, []string{"name"}),
		longestRunning: prometheus.NewGaugeVec(prometheus.GaugeOpts{Subsystem: "workqueue", Name: "longest_running_processor_seconds",
			Help: "Seconds the longest running processor has been running."}, []string{"name"}),
	}
	reg.MustRegister(w.depth, w.addsTotal, w.retriesTotal, w.latency, w.workDuration, w.unfinished, w.longestRunning)
	return w
}

func (w *WorkqueueMetrics) NewDepthMetric(name string) workqueue.GaugeMetric {
	return w.depth.WithLabelValues(name)
}

func (w *WorkqueueMetrics) NewAddsMetric(name string) workqueue.CounterMetric {
	return w.addsTotal.WithLabelValues(name)
}

func (w *WorkqueueMetrics) NewLatencyMetric(name string) workqueue.HistogramMetric {
	return w.latency.WithLabelValues(name)
}

func (w *WorkqueueMetrics) NewWorkDurationMetric(name string) workqueue.HistogramMetric {
	return w.workDuration.WithLabelValues(name)
}

func (w *WorkqueueMetrics) NewUnfinishedWorkSecondsMetric(name string) workqueue.SettableGaugeMetric {
	return w.unfinished.WithLabelValues(name)
}

func (w *WorkqueueMetrics) NewLongestRunningProcessorSecondsMetric(name string) workqueue.SettableGaugeMetric {
	return w.longestRunning.WithLabelValues(name)
}

func (w *WorkqueueMetrics) NewRetriesMetric(name string) workqueue.CounterMetric {
	return w.retriesTotal.WithLabelValues(name)
}

// observeCall counts one provider API operation and, when it failed, its
// error class.
func (m *Metrics) observeCall(provider, op string, err error) {
	m.ProviderCalls.WithLabelValues(provider, op).Inc()
	if err != nil {
		m.ProviderErrors.WithLabelValues(provider, op, string(providers.ClassOf(err))).Inc()
	}
}

// Provider operations as counted in provider_api_calls_total.
var providerOperations = []string{"list_offers", "list_instances", "launch", "terminate"}

var errorClasses = []providers.ErrorClass{providers.ClassCapacity, providers.ClassQuota, providers.ClassUnauthorized,
	providers.ClassRateLimited, providers.ClassNotFound, providers.ClassInvalid, providers.ClassTransient}

// initProviders creates every provider's counter series at zero, so alerts
// and dashboards see them (and rates work) before the first event.
func (m *Metrics) initProviders(ps map[string]providers.Provider) {
	for name := range ps {
		m.OrphansTerminated.WithLabelValues(name)
		m.CatalogStale.WithLabelValues(name)
		if _, ok := ps[name].(providers.Bidder); ok {
			m.Rebids.WithLabelValues(name)
		}
		for _, op := range providerOperations {
			m.ProviderCalls.WithLabelValues(name, op)
			for _, class := range errorClasses {
				m.ProviderErrors.WithLabelValues(name, op, string(class))
			}
		}
	}
}
