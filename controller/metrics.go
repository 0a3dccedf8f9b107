package controller

import (
	"time"

	kvlisters "github.com/kvirt/kvirt/api/client/listers/api/v1"
	v1 "github.com/kvirt/kvirt/api/v1"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"k8s.io/apimachinery/pkg/labels"
)

// Metrics are the controller's Prometheus collectors (registered by NewMetrics).
type Metrics struct {
	Reconciles *prometheus.CounterVec
	Latency    *prometheus.HistogramVec
	registry   *prometheus.Registry
}

// NewMetrics creates the collectors in a fresh registry (plus Go and process collectors).
func NewMetrics() *Metrics {
	m := &Metrics{
		Reconciles: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kvirt_controller_reconciles_total",
			Help: "Reconciles by controller (vm, vmi) and result (success, error).",
		}, []string{"controller", "result"}),
		Latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "kvirt_controller_reconcile_duration_seconds",
			Help: "Duration of one reconcile by controller (vm, vmi).",
			// 1 ms … 60 s in 28 buckets (×1.5 apart), fine enough for p50/p99 by interpolation.
			Buckets: prometheus.ExponentialBucketsRange(0.001, 60, 28),
		}, []string{"controller"}),
		registry: prometheus.NewRegistry(),
	}
	m.registry.MustRegister(m.Reconciles, m.Latency,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Registry is where the collectors live (served on /metrics).
func (m *Metrics) Registry() *prometheus.Registry { return m.registry }

func (m *Metrics) observe(controller string, start time.Time, err error) {
	if m == nil {
		return
	}
	res := "success"
	if err != nil {
		res = "error"
	}
	m.Reconciles.WithLabelValues(controller, res).Inc()
	m.Latency.WithLabelValues(controller).Observe(time.Since(start).Seconds())
}

// phaseCollector reports kvirt_vmi_phase_count{phase} from the VMI lister at scrape time.
type phaseCollector struct {
	lister kvlisters.VirtualMachineInstanceLister
	desc   *prometheus.Desc
}

func newPhaseCollector(l kvlisters.VirtualMachineInstanceLister) *phaseCollector {
	return &phaseCollector{lister: l, desc: prometheus.NewDesc("kvirt_vmi_phase_count", "VirtualMachineInstances per phase.", []string{"phase"}, nil)}
}

func (c *phaseCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c *phaseCollector) Collect(ch chan<- prometheus.Metric) {
	vmis, err := c.lister.List(labels.Everything())
	if err != nil {
		return
	}
	counts := map[v1.VirtualMachineInstancePhase]int{}
	for _, p := range []v1.VirtualMachineInstancePhase{v1.Pending, v1.Scheduling, v1.Scheduled, v1.Running, v1.Succeeded, v1.Failed, v1.Unknown} {
		counts[p] = 0
	}
	for _, vmi := range vmis {
		p := vmi.Status.Phase
		if p == "" {
			p = v1.Pending
		}
		counts[p]++
	}
	for p, n := range counts {
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(n), string(p))
	}
}
