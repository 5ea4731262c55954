package metrics

import (
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

const namespace = "migrate"

// Histogram buckets, in base units.
var (
	// DowntimeBuckets spans 1 ms to 60 s, doubling (17 buckets).
	DowntimeBuckets = prometheus.ExponentialBucketsRange(0.001, 60, 17)
	// DurationBuckets spans 1 ms to 30 min for whole operations and phases:
	// a freeze takes milliseconds, a dump of a large memory image minutes
	// (22 buckets, factor about 1.9).
	DurationBuckets = prometheus.ExponentialBucketsRange(0.001, 1800, 22)
	// SizeBuckets spans 1 MiB to 64 GiB, doubling (17 buckets).
	SizeBuckets = prometheus.ExponentialBuckets(1<<20, 2, 17)
)

// Recorder is what the agent calls. Each method is safe for concurrent use
// and never fails: metrics must not break an operation.
type Recorder interface {
	// ObserveMove records a finished move, successful or not.
	ObserveMove(Move)
	// ObserveCheckpoint records a finished checkpoint.
	ObserveCheckpoint(Checkpoint)
	// ObserveRestore records a finished restore.
	ObserveRestore(Restore)
	// ObserveSnapshot records a finished snapshot.
	ObserveSnapshot(Snapshot)
	// ObserveScheduleLag records how late a scheduled snapshot started
	// against its planned time (jitter included).
	ObserveScheduleLag(time.Duration)
	// SetSnapshotStore records the size of the snapshot store.
	SetSnapshotStore(SnapshotStore)
	// Begin counts an operation of kind in flight until the returned func is
	// called; calling it more than once has no further effect.
	Begin(kind OpKind) (end func())
}

// Move is one move as the source agent saw it.
type Move struct {
	Mode   string // ModeCold, ...; others count as ModeOther
	Result Result
	Reason Reason // why it failed; ignored on success
	// Downtime is the time the container did not run: freeze to resume on the
	// target. Zero is not observed (the move failed before freezing).
	Downtime time.Duration
	// Phases holds how long each phase took; phases that did not run are absent.
	Phases map[Phase]time.Duration
	// RawBytes is the image size before compression, WireBytes what was sent.
	RawBytes, WireBytes int64
}

// Checkpoint is one checkpoint.
type Checkpoint struct {
	Result   Result
	Reason   Reason
	Duration time.Duration // whole operation
	Downtime time.Duration // container frozen; zero is not observed
	Size     int64         // image bytes on disk; observed on success only
}

// Restore is one restore.
type Restore struct {
	Result   Result
	Reason   Reason
	Duration time.Duration
}

// Snapshot is one snapshot (a checkpoint kept in the page store).
type Snapshot struct {
	Result       Result
	Reason       Reason // failures only
	Duration     time.Duration
	Downtime     time.Duration
	LogicalBytes int64 // image size as dumped
	StoredBytes  int64 // new bytes written to the store after deduplication
	// DedupRatio is the fraction of LogicalBytes the store had already (0..1).
	DedupRatio float64
}

// SnapshotStore is the size of a node's snapshot store.
type SnapshotStore struct {
	Snapshots   int
	Chunks      int
	StoredBytes int64 // chunk and manifest bytes
}

// AgentInfo is exported as the labels of migrate_agent_info.
type AgentInfo struct {
	Version     string
	Node        string
	CRIUVersion string
	CgroupMode  string // "v1", "v2" or "hybrid"
}

// Options configures New.
type Options struct {
	Info AgentInfo
	// StartTime is the agent's start; zero means now.
	StartTime time.Time
	// Containers returns the number of containers per status at scrape time.
	// Nil leaves migrate_containers out. It is called from the scrape
	// goroutine and must not block for long.
	Containers func() map[string]int
}

// Prom is the Recorder backed by Prometheus collectors.
type Prom struct {
	moveDowntime  *prometheus.HistogramVec
	movePhase     *prometheus.HistogramVec
	moveBytes     *prometheus.CounterVec
	moves         *prometheus.CounterVec
	ckptDuration  *prometheus.HistogramVec
	ckptDowntime  prometheus.Histogram
	ckptSize      prometheus.Histogram
	restDuration  *prometheus.HistogramVec
	ckpts         *prometheus.CounterVec
	restores      *prometheus.CounterVec
	snapDuration  prometheus.Histogram
	snapDowntime  prometheus.Histogram
	snapBytes     *prometheus.HistogramVec
	snapFailures  *prometheus.CounterVec
	snapDedup     prometheus.Histogram
	schedLag      prometheus.Histogram
	storeBytes    prometheus.Gauge
	storeSnaps    prometheus.Gauge
	storeChunks   prometheus.Gauge
	inFlight      *prometheus.GaugeVec
	agentInfo     *prometheus.GaugeVec
	agentStart    prometheus.Gauge
	containerDesc *prometheus.Desc
	containers    func() map[string]int
}

var _ Recorder = (*Prom)(nil)

// New creates the collectors and registers them with reg. It fails if a
// metric of the same name is already registered there.
func New(reg prometheus.Registerer, o Options) (*Prom, error) {
	p := &Prom{
		moveDowntime: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: namespace, Name: "move_downtime_seconds",
			Help:    "Time a moved container did not run, from freeze on the source to resume on the target.",
			Buckets: DowntimeBuckets,
		}, []string{"mode", "result"}),
		movePhase: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: namespace, Name: "move_phase_duration_seconds",
			Help:    "Duration of each phase of a move.",
			Buckets: DurationBuckets,
		}, []string{"mode", "phase"}),
		moveBytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "move_bytes_total",
			Help: "Bytes of moved images: raw before compression, wire as sent to the target.",
		}, []string{"kind"}),
		moves: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "moves_total",
			Help: "Finished moves by mode, result and failure reason.",
		}, []string{"mode", "result", "reason"}),
		ckptDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: namespace, Name: "checkpoint_duration_seconds",
			Help:    "Duration of a checkpoint.",
			Buckets: DurationBuckets,
		}, []string{"result"}),
		ckptDowntime: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: namespace, Name: "checkpoint_downtime_seconds",
			Help:    "Time a container was frozen for a checkpoint.",
			Buckets: DowntimeBuckets,
		}),
		ckptSize: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: namespace, Name: "checkpoint_size_bytes",
			Help:    "Size of successful checkpoint images.",
			Buckets: SizeBuckets,
		}),
		restDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: namespace, Name: "restore_duration_seconds",
			Help:    "Duration of a restore.",
			Buckets: DurationBuckets,
		}, []string{"result"}),
		ckpts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "checkpoints_total",
			Help: "Finished checkpoints by result and failure reason.",
		}, []string{"result", "reason"}),
		restores: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "restores_total",
			Help: "Finished restores by result and failure reason.",
		}, []string{"result", "reason"}),
		snapDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: namespace, Name: "snapshot_duration_seconds",
			Help:    "Duration of a successful snapshot.",
			Buckets: DurationBuckets,
		}),
		snapDowntime: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: namespace, Name: "snapshot_downtime_seconds",
			Help:    "Time a container was frozen for a snapshot.",
			Buckets: DowntimeBuckets,
		}),
		snapBytes: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: namespace, Name: "snapshot_bytes",
			Help:    "Size of a snapshot: logical as dumped, stored as newly written after deduplication.",
			Buckets: SizeBuckets,
		}, []string{"kind"}),
		snapFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "snapshot_failures_total",
			Help: "Failed snapshots by reason.",
		}, []string{"reason"}),
		snapDedup: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: namespace, Name: "snapshot_dedup_ratio",
			Help:    "Fraction of a snapshot's logical bytes the store held already.",
			Buckets: []float64{0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.98, 0.99, 0.995, 0.999},
		}),
		schedLag: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: namespace, Name: "snapshot_schedule_lag_seconds",
			Help:    "How late a scheduled snapshot started against its planned time.",
			Buckets: DowntimeBuckets,
		}),
		storeBytes: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: namespace, Name: "snapshot_store_bytes",
			Help: "Bytes of the snapshot store: chunks (compressed) and manifests.",
		}),
		storeSnaps: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: namespace, Name: "snapshot_store_snapshots",
			Help: "Snapshots in the snapshot store.",
		}),
		storeChunks: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: namespace, Name: "snapshot_store_chunks",
			Help: "Chunks in the snapshot store.",
		}),
		inFlight: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: namespace, Name: "operations_in_flight",
			Help: "Operations running now, by kind.",
		}, []string{"kind"}),
		agentInfo: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: namespace, Name: "agent_info",
			Help: "Always 1; labels describe the agent.",
		}, []string{"version", "node", "criu_version", "cgroup_mode"}),
		agentStart: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: namespace, Name: "agent_start_time_seconds",
			Help: "Start time of the agent in seconds since the Unix epoch.",
		}),
		containerDesc: prometheus.NewDesc(prometheus.BuildFQName(namespace, "", "containers"),
			"Containers on this node by status.", []string{"status"}, nil),
		containers: o.Containers,
	}

	// Create the series a dashboard or alert expects to exist at zero, so
	// rate() and increase() see the first failure and "no data" means no agent.
	for _, k := range []string{"raw", "wire"} {
		p.moveBytes.WithLabelValues(k)
	}
	for _, k := range []OpKind{OpMove, OpCheckpoint, OpRestore, OpSnapshot} {
		p.inFlight.WithLabelValues(string(k))
	}
	p.ckpts.WithLabelValues(string(ResultSuccess), string(ReasonNone))
	p.restores.WithLabelValues(string(ResultSuccess), string(ReasonNone))
	for _, r := range Reasons {
		p.ckpts.WithLabelValues(string(ResultFailure), string(r))
		p.restores.WithLabelValues(string(ResultFailure), string(r))
		p.snapFailures.WithLabelValues(string(r))
	}

	start := o.StartTime
	if start.IsZero() {
		start = time.Now()
	}
	p.agentStart.Set(float64(start.UnixNano()) / 1e9)
	i := o.Info
	p.agentInfo.WithLabelValues(i.Version, i.Node, i.CRIUVersion, i.CgroupMode).Set(1)

	cs := []prometheus.Collector{
		p.moveDowntime, p.movePhase, p.moveBytes, p.moves,
		p.ckptDuration, p.ckptDowntime, p.ckptSize, p.restDuration, p.ckpts, p.restores,
		p.snapDuration, p.snapDowntime, p.snapBytes, p.snapFailures,
		p.snapDedup, p.schedLag, p.storeBytes, p.storeSnaps, p.storeChunks,
		p.inFlight, p.agentInfo, p.agentStart,
	}
	if p.containers != nil {
		cs = append(cs, containersCollector{p})
	}
	for _, c := range cs {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register metrics: %w", err)
		}
	}
	return p, nil
}

// ObserveMove implements Recorder.
func (p *Prom) ObserveMove(m Move) {
	mode := NormalizeMode(m.Mode)
	res, reason := resultReason(m.Result, m.Reason)
	p.moves.WithLabelValues(mode, string(res), string(reason)).Inc()
	if m.Downtime > 0 {
		p.moveDowntime.WithLabelValues(mode, string(res)).Observe(m.Downtime.Seconds())
	}
	for ph, d := range m.Phases {
		p.movePhase.WithLabelValues(mode, string(NormalizePhase(ph))).Observe(d.Seconds())
	}
	if m.RawBytes > 0 {
		p.moveBytes.WithLabelValues("raw").Add(float64(m.RawBytes))
	}
	if m.WireBytes > 0 {
		p.moveBytes.WithLabelValues("wire").Add(float64(m.WireBytes))
	}
}

// ObserveCheckpoint implements Recorder.
func (p *Prom) ObserveCheckpoint(c Checkpoint) {
	res, reason := resultReason(c.Result, c.Reason)
	p.ckpts.WithLabelValues(string(res), string(reason)).Inc()
	p.ckptDuration.WithLabelValues(string(res)).Observe(c.Duration.Seconds())
	if c.Downtime > 0 {
		p.ckptDowntime.Observe(c.Downtime.Seconds())
	}
	if res == ResultSuccess && c.Size > 0 {
		p.ckptSize.Observe(float64(c.Size))
	}
}

// ObserveRestore implements Recorder.
func (p *Prom) ObserveRestore(r Restore) {
	res, reason := resultReason(r.Result, r.Reason)
	p.restores.WithLabelValues(string(res), string(reason)).Inc()
	p.restDuration.WithLabelValues(string(res)).Observe(r.Duration.Seconds())
}

// ObserveSnapshot implements Recorder. Durations and sizes describe successful
// snapshots only; a failure counts in migrate_snapshot_failures_total.
func (p *Prom) ObserveSnapshot(s Snapshot) {
	res, reason := resultReason(s.Result, s.Reason)
	if res == ResultFailure {
		p.snapFailures.WithLabelValues(string(reason)).Inc()
		return
	}
	p.snapDuration.Observe(s.Duration.Seconds())
	if s.Downtime > 0 {
		p.snapDowntime.Observe(s.Downtime.Seconds())
	}
	p.snapBytes.WithLabelValues("logical").Observe(float64(s.LogicalBytes))
	p.snapBytes.WithLabelValues("stored").Observe(float64(s.StoredBytes))
	p.snapDedup.Observe(s.DedupRatio)
}

// ObserveScheduleLag implements Recorder.
func (p *Prom) ObserveScheduleLag(d time.Duration) { p.schedLag.Observe(max(d, 0).Seconds()) }

// SetSnapshotStore implements Recorder.
func (p *Prom) SetSnapshotStore(st SnapshotStore) {
	p.storeBytes.Set(float64(st.StoredBytes))
	p.storeSnaps.Set(float64(st.Snapshots))
	p.storeChunks.Set(float64(st.Chunks))
}

// Begin implements Recorder.
func (p *Prom) Begin(kind OpKind) func() {
	g := p.inFlight.WithLabelValues(string(NormalizeOpKind(kind)))
	g.Inc()
	var once sync.Once
	return func() { once.Do(g.Dec) }
}

// containersCollector asks the agent for container counts at scrape time, so
// the agent need not push every status change.
type containersCollector struct{ p *Prom }

func (c containersCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.p.containerDesc }

func (c containersCollector) Collect(ch chan<- prometheus.Metric) {
	// Every known status, 0 included: a series that vanishes when its last
	// container moves away reads as "no data" (and goes stale), not 0.
	counts := map[string]int{}
	for s := range containerStatuses {
		counts[s] = 0
	}
	for s, n := range c.p.containers() {
		counts[NormalizeStatus(s)] += n
	}
	for s, n := range counts {
		ch <- prometheus.MustNewConstMetric(c.p.containerDesc, prometheus.GaugeValue, float64(n), s)
	}
}

// NewRegistry returns a registry holding the Go runtime and process
// collectors, for an agent that wants them beside its own metrics.
func NewRegistry() *prometheus.Registry {
	r := prometheus.NewRegistry()
	r.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return r
}

// Handler serves the metrics of g in the Prometheus exposition formats. A
// failing collector yields an HTTP 500 rather than a partial scrape that
// would look like counters resetting.
func Handler(g prometheus.Gatherer) http.Handler {
	return promhttp.HandlerFor(g, promhttp.HandlerOpts{ErrorHandling: promhttp.HTTPErrorOnError})
}

// Nop is a Recorder that records nothing, for tests of other packages and
// agents run without metrics.
type Nop struct{}

var _ Recorder = Nop{}

// ObserveMove implements Recorder.
func (Nop) ObserveMove(Move) {}

// ObserveCheckpoint implements Recorder.
func (Nop) ObserveCheckpoint(Checkpoint) {}

// ObserveRestore implements Recorder.
func (Nop) ObserveRestore(Restore) {}

// ObserveSnapshot implements Recorder.
func (Nop) ObserveSnapshot(Snapshot) {}

// ObserveScheduleLag implements Recorder.
func (Nop) ObserveScheduleLag(time.Duration) {}

// SetSnapshotStore implements Recorder.
func (Nop) SetSnapshotStore(SnapshotStore) {}

// Begin implements Recorder.
func (Nop) Begin(OpKind) func() { return func() {} }
