package metrics

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// allMetrics is every family New registers, with its type.
var allMetrics = map[string]dto.MetricType{
	"migrate_move_downtime_seconds":         dto.MetricType_HISTOGRAM,
	"migrate_move_phase_duration_seconds":   dto.MetricType_HISTOGRAM,
	"migrate_move_bytes_total":              dto.MetricType_COUNTER,
	"migrate_moves_total":                   dto.MetricType_COUNTER,
	"migrate_checkpoint_duration_seconds":   dto.MetricType_HISTOGRAM,
	"migrate_checkpoint_downtime_seconds":   dto.MetricType_HISTOGRAM,
	"migrate_checkpoint_size_bytes":         dto.MetricType_HISTOGRAM,
	"migrate_restore_duration_seconds":      dto.MetricType_HISTOGRAM,
	"migrate_checkpoints_total":             dto.MetricType_COUNTER,
	"migrate_restores_total":                dto.MetricType_COUNTER,
	"migrate_snapshot_duration_seconds":     dto.MetricType_HISTOGRAM,
	"migrate_snapshot_downtime_seconds":     dto.MetricType_HISTOGRAM,
	"migrate_snapshot_bytes":                dto.MetricType_HISTOGRAM,
	"migrate_snapshot_failures_total":       dto.MetricType_COUNTER,
	"migrate_snapshot_dedup_ratio":          dto.MetricType_HISTOGRAM,
	"migrate_snapshot_schedule_lag_seconds": dto.MetricType_HISTOGRAM,
	"migrate_snapshot_store_bytes":          dto.MetricType_GAUGE,
	"migrate_snapshot_store_snapshots":      dto.MetricType_GAUGE,
	"migrate_snapshot_store_chunks":         dto.MetricType_GAUGE,
	"migrate_agent_info":                    dto.MetricType_GAUGE,
	"migrate_agent_start_time_seconds":      dto.MetricType_GAUGE,
	"migrate_containers":                    dto.MetricType_GAUGE,
	"migrate_operations_in_flight":          dto.MetricType_GAUGE,
}

// newTest returns a Recorder on its own registry, with every optional metric.
func newTest(t *testing.T, containers func() map[string]int) (*Prom, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	if containers == nil {
		containers = func() map[string]int { return map[string]int{"running": 2, "stopped": 1} }
	}
	p, err := New(reg, Options{
		Info:       AgentInfo{Version: "1.2.3", Node: "node1", CRIUVersion: "4.1", CgroupMode: "hybrid"},
		StartTime:  time.Unix(1700000000, 500000000),
		Containers: containers,
	})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return p, reg
}

// recordAll records at least one sample of every metric.
func recordAll(p Recorder) {
	p.ObserveMove(Move{
		Mode: ModeCold, Result: ResultSuccess, Downtime: 250 * time.Millisecond,
		Phases: map[Phase]time.Duration{
			PhaseFreeze: 5 * time.Millisecond, PhaseDump: 100 * time.Millisecond,
			PhaseTransfer: 2 * time.Second, PhaseRestore: 120 * time.Millisecond,
		},
		RawBytes: 3 << 20, WireBytes: 1 << 20,
	})
	p.ObserveMove(Move{Mode: ModeCold, Result: ResultFailure, Reason: ReasonTargetUnreachable})
	p.ObserveCheckpoint(Checkpoint{Result: ResultSuccess, Duration: 2 * time.Second, Downtime: 300 * time.Millisecond, Size: 5 << 20})
	p.ObserveCheckpoint(Checkpoint{Result: ResultFailure, Reason: ReasonDump, Duration: time.Second})
	p.ObserveRestore(Restore{Result: ResultSuccess, Duration: 500 * time.Millisecond})
	p.ObserveSnapshot(Snapshot{Result: ResultSuccess, Duration: time.Second, Downtime: 20 * time.Millisecond, LogicalBytes: 8 << 20, StoredBytes: 2 << 20})
	p.ObserveSnapshot(Snapshot{Result: ResultFailure, Reason: ReasonTimeout})
	p.ObserveScheduleLag(1500 * time.Millisecond)
	p.SetSnapshotStore(SnapshotStore{Snapshots: 3, Chunks: 100, StoredBytes: 9 << 20})
	p.Begin(OpMove)
}

// scrape fetches /metrics through Handler and parses the text exposition.
func scrape(t *testing.T, g prometheus.Gatherer) map[string]*dto.MetricFamily {
	t.Helper()
	srv := httptest.NewServer(Handler(g))
	t.Cleanup(srv.Close)
	req, err := http.NewRequest(http.MethodGet, srv.URL+"/metrics", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Accept", "text/plain; version=0.0.4")
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatalf("scrape: %v", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("scrape: status %d: %s", resp.StatusCode, body)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
		t.Fatalf("scrape: content type %q", ct)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := parser.TextToMetricFamilies(strings.NewReader(string(body)))
	if err != nil {
		t.Fatalf("parse exposition: %v\n%s", err, body)
	}
	return mfs
}

func labelsOf(m *dto.Metric) map[string]string {
	l := map[string]string{}
	for _, lp := range m.GetLabel() {
		l[lp.GetName()] = lp.GetValue()
	}
	return l
}

// find returns the sample of family name whose labels are exactly want.
func find(t *testing.T, mfs map[string]*dto.MetricFamily, name string, want map[string]string) *dto.Metric {
	t.Helper()
	mf, ok := mfs[name]
	if !ok {
		t.Fatalf("family %s not exposed", name)
	}
	for _, m := range mf.GetMetric() {
		got := labelsOf(m)
		if fmt.Sprint(got) == fmt.Sprint(want) {
			return m
		}
	}
	var have []string
	for _, m := range mf.GetMetric() {
		have = append(have, fmt.Sprint(labelsOf(m)))
	}
	t.Fatalf("%s%v not exposed; have %v", name, want, have)
	return nil
}

func TestScrapeExposesEveryMetric(t *testing.T) {
	p, reg := newTest(t, nil)
	recordAll(p)
	mfs := scrape(t, reg)

	for name, typ := range allMetrics {
		mf, ok := mfs[name]
		if !ok {
			t.Errorf("%s missing from the scrape", name)
			continue
		}
		if mf.GetType() != typ {
			t.Errorf("%s: type %v, want %v", name, mf.GetType(), typ)
		}
		if mf.GetHelp() == "" {
			t.Errorf("%s: no help text", name)
		}
	}
	for name := range mfs {
		if _, ok := allMetrics[name]; !ok {
			t.Errorf("unexpected family %s", name)
		}
	}
}

func TestScrapeValues(t *testing.T) {
	p, reg := newTest(t, nil)
	recordAll(p)
	p.ObserveMove(Move{Mode: ModeCold, Result: ResultSuccess, Downtime: 2 * time.Second, RawBytes: 1 << 20, WireBytes: 1 << 19})
	mfs := scrape(t, reg)

	if v := find(t, mfs, "migrate_moves_total", map[string]string{"mode": "cold", "result": "success", "reason": "none"}).GetCounter().GetValue(); v != 2 {
		t.Errorf("successful moves = %v, want 2", v)
	}
	if v := find(t, mfs, "migrate_moves_total", map[string]string{"mode": "cold", "result": "failure", "reason": "target_unreachable"}).GetCounter().GetValue(); v != 1 {
		t.Errorf("failed moves = %v, want 1", v)
	}
	h := find(t, mfs, "migrate_move_downtime_seconds", map[string]string{"mode": "cold", "result": "success"}).GetHistogram()
	if h.GetSampleCount() != 2 || h.GetSampleSum() != 2.25 {
		t.Errorf("downtime count %d sum %v, want 2 and 2.25", h.GetSampleCount(), h.GetSampleSum())
	}
	// The failed move had no downtime: no series for it.
	for _, m := range mfs["migrate_move_downtime_seconds"].GetMetric() {
		if labelsOf(m)["result"] == "failure" {
			t.Errorf("downtime observed for a move that never froze: %v", labelsOf(m))
		}
	}
	// Cumulative buckets: bounds from 250 ms up hold the first sample, from 2 s both.
	for _, b := range h.GetBucket() {
		le := b.GetUpperBound()
		var want uint64
		switch {
		case le >= 2:
			want = 2
		case le >= 0.25:
			want = 1
		}
		if b.GetCumulativeCount() != want {
			t.Errorf("downtime bucket le=%v: %d, want %d", le, b.GetCumulativeCount(), want)
		}
	}
	ph := find(t, mfs, "migrate_move_phase_duration_seconds", map[string]string{"mode": "cold", "phase": "transfer"}).GetHistogram()
	if ph.GetSampleCount() != 1 || ph.GetSampleSum() != 2 {
		t.Errorf("transfer phase count %d sum %v", ph.GetSampleCount(), ph.GetSampleSum())
	}
	if n := len(mfs["migrate_move_phase_duration_seconds"].GetMetric()); n != 4 {
		t.Errorf("%d phase series, want 4", n)
	}
	if v := find(t, mfs, "migrate_move_bytes_total", map[string]string{"kind": "raw"}).GetCounter().GetValue(); v != 4<<20 {
		t.Errorf("raw bytes %v", v)
	}
	if v := find(t, mfs, "migrate_move_bytes_total", map[string]string{"kind": "wire"}).GetCounter().GetValue(); v != 3<<19 {
		t.Errorf("wire bytes %v", v)
	}

	if v := find(t, mfs, "migrate_checkpoints_total", map[string]string{"result": "failure", "reason": "dump"}).GetCounter().GetValue(); v != 1 {
		t.Errorf("checkpoint dump failures %v", v)
	}
	// Pre-created at zero so increase() sees the first failure.
	if v := find(t, mfs, "migrate_checkpoints_total", map[string]string{"result": "failure", "reason": "timeout"}).GetCounter().GetValue(); v != 0 {
		t.Errorf("checkpoint timeout failures %v", v)
	}
	if c := find(t, mfs, "migrate_checkpoint_duration_seconds", map[string]string{"result": "failure"}).GetHistogram().GetSampleCount(); c != 1 {
		t.Errorf("failed checkpoint durations %d", c)
	}
	if s := find(t, mfs, "migrate_checkpoint_size_bytes", map[string]string{}).GetHistogram(); s.GetSampleCount() != 1 || s.GetSampleSum() != 5<<20 {
		t.Errorf("checkpoint size count %d sum %v", s.GetSampleCount(), s.GetSampleSum())
	}
	if c := find(t, mfs, "migrate_checkpoint_downtime_seconds", map[string]string{}).GetHistogram().GetSampleCount(); c != 1 {
		t.Errorf("checkpoint downtime count %d", c)
	}
	if v := find(t, mfs, "migrate_restores_total", map[string]string{"result": "success", "reason": "none"}).GetCounter().GetValue(); v != 1 {
		t.Errorf("restores %v", v)
	}
	if s := find(t, mfs, "migrate_snapshot_bytes", map[string]string{"kind": "stored"}).GetHistogram(); s.GetSampleSum() != 2<<20 {
		t.Errorf("snapshot stored bytes %v", s.GetSampleSum())
	}
	if v := find(t, mfs, "migrate_snapshot_failures_total", map[string]string{"reason": "timeout"}).GetCounter().GetValue(); v != 1 {
		t.Errorf("snapshot timeouts %v", v)
	}
	if c := find(t, mfs, "migrate_snapshot_duration_seconds", map[string]string{}).GetHistogram().GetSampleCount(); c != 1 {
		t.Errorf("snapshot durations %d, want only the successful one", c)
	}

	info := find(t, mfs, "migrate_agent_info", map[string]string{"version": "1.2.3", "node": "node1", "criu_version": "4.1", "cgroup_mode": "hybrid"})
	if info.GetGauge().GetValue() != 1 {
		t.Errorf("agent_info = %v", info.GetGauge().GetValue())
	}
	if v := find(t, mfs, "migrate_agent_start_time_seconds", map[string]string{}).GetGauge().GetValue(); v != 1700000000.5 {
		t.Errorf("start time %v", v)
	}
	if v := find(t, mfs, "migrate_containers", map[string]string{"status": "running"}).GetGauge().GetValue(); v != 2 {
		t.Errorf("running containers %v", v)
	}
	if v := find(t, mfs, "migrate_operations_in_flight", map[string]string{"kind": "move"}).GetGauge().GetValue(); v != 1 {
		t.Errorf("moves in flight %v", v)
	}
}

func TestReasonBounding(t *testing.T) {
	for in, want := range map[Reason]Reason{
		"target_unreachable": ReasonTargetUnreachable, "transfer": ReasonTransfer, "restore": ReasonRestore,
		"dump": ReasonDump, "cancelled": ReasonCancelled, "timeout": ReasonTimeout, "other": ReasonOther,
		"none": ReasonNone, "": ReasonOther, "Timeout": ReasonOther, "dial tcp 10.0.0.2:7443: connection refused": ReasonOther,
	} {
		if got := NormalizeReason(in); got != want {
			t.Errorf("NormalizeReason(%q) = %q, want %q", in, got, want)
		}
	}

	p, reg := newTest(t, nil)
	// Free-form reasons, a failure claiming "none", a success with a reason,
	// an unknown mode and phase: none may create a series of its own.
	for i := 0; i < 50; i++ {
		p.ObserveMove(Move{Mode: "cold", Result: ResultFailure, Reason: Reason(fmt.Sprintf("error %d", i))})
	}
	p.ObserveMove(Move{Mode: "cold", Result: ResultFailure, Reason: ReasonNone})
	p.ObserveMove(Move{Mode: "teleport", Result: ResultSuccess, Reason: ReasonDump,
		Phases: map[Phase]time.Duration{"warp": time.Second}})
	p.ObserveMove(Move{Mode: "cold", Result: "bogus"})
	p.ObserveCheckpoint(Checkpoint{Result: ResultFailure, Reason: "EPERM"})
	p.ObserveRestore(Restore{Result: ResultFailure, Reason: "ENOSPC"})
	p.ObserveSnapshot(Snapshot{Result: ResultFailure, Reason: "disk full"})
	p.Begin("defrag")()
	mfs := scrape(t, reg)

	if v := find(t, mfs, "migrate_moves_total", map[string]string{"mode": "cold", "result": "failure", "reason": "other"}).GetCounter().GetValue(); v != 52 {
		t.Errorf("cold failures with reason other = %v, want 52", v)
	}
	find(t, mfs, "migrate_moves_total", map[string]string{"mode": "other", "result": "success", "reason": "none"})
	find(t, mfs, "migrate_move_phase_duration_seconds", map[string]string{"mode": "other", "phase": "other"})
	if n := len(mfs["migrate_moves_total"].GetMetric()); n != 2 {
		t.Errorf("%d move series, want 2", n)
	}
	if v := find(t, mfs, "migrate_checkpoints_total", map[string]string{"result": "failure", "reason": "other"}).GetCounter().GetValue(); v != 1 {
		t.Errorf("checkpoint failures with reason other = %v", v)
	}
	if v := find(t, mfs, "migrate_restores_total", map[string]string{"result": "failure", "reason": "other"}).GetCounter().GetValue(); v != 1 {
		t.Errorf("restore failures with reason other = %v", v)
	}
	if v := find(t, mfs, "migrate_snapshot_failures_total", map[string]string{"reason": "other"}).GetCounter().GetValue(); v != 1 {
		t.Errorf("snapshot failures with reason other = %v", v)
	}
	if v := find(t, mfs, "migrate_operations_in_flight", map[string]string{"kind": "other"}).GetGauge().GetValue(); v != 0 {
		t.Errorf("other operations in flight %v", v)
	}
	allowed := map[string]bool{"none": true}
	for _, r := range Reasons {
		allowed[string(r)] = true
	}
	for name, mf := range mfs {
		for _, m := range mf.GetMetric() {
			if r, ok := labelsOf(m)["reason"]; ok && !allowed[r] {
				t.Errorf("%s has reason %q outside the documented set", name, r)
			}
		}
	}
}

func TestContainersAskedAtScrape(t *testing.T) {
	var mu sync.Mutex
	counts := map[string]int{"running": 3}
	_, reg := newTest(t, func() map[string]int {
		mu.Lock()
		defer mu.Unlock()
		c := map[string]int{}
		for k, v := range counts {
			c[k] = v
		}
		return c
	})
	if v := find(t, scrape(t, reg), "migrate_containers", map[string]string{"status": "running"}).GetGauge().GetValue(); v != 3 {
		t.Fatalf("running = %v, want 3", v)
	}
	mu.Lock()
	counts = map[string]int{"running": 1, "paused": 2, "zombie": 4, "limbo": 1}
	mu.Unlock()
	mfs := scrape(t, reg)
	for status, want := range map[string]float64{"running": 1, "paused": 2, "other": 5} {
		if v := find(t, mfs, "migrate_containers", map[string]string{"status": status}).GetGauge().GetValue(); v != want {
			t.Errorf("%s = %v, want %v", status, v, want)
		}
	}
	// Every known status is there, at 0 when no container has it, plus other.
	if n, want := len(mfs["migrate_containers"].GetMetric()), len(containerStatuses)+1; n != want {
		t.Errorf("%d container series, want %d", n, want)
	}
	if v := find(t, mfs, "migrate_containers", map[string]string{"status": "stopped"}).GetGauge().GetValue(); v != 0 {
		t.Errorf("stopped = %v, want 0", v)
	}
}

func TestWithoutContainersFunc(t *testing.T) {
	reg := prometheus.NewRegistry()
	if _, err := New(reg, Options{}); err != nil {
		t.Fatal(err)
	}
	mfs := scrape(t, reg)
	if _, ok := mfs["migrate_containers"]; ok {
		t.Error("migrate_containers exposed without a Containers func")
	}
	if v := find(t, mfs, "migrate_agent_start_time_seconds", map[string]string{}).GetGauge().GetValue(); time.Since(time.Unix(int64(v), 0)) > time.Minute {
		t.Errorf("default start time %v is not now", v)
	}
}

func TestBeginEnd(t *testing.T) {
	p, reg := newTest(t, nil)
	var wg sync.WaitGroup
	ends := make([]func(), 20)
	for i := range ends {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ends[i] = p.Begin(OpCheckpoint)
		}()
	}
	wg.Wait()
	gauge := func() float64 {
		return find(t, scrape(t, reg), "migrate_operations_in_flight", map[string]string{"kind": "checkpoint"}).GetGauge().GetValue()
	}
	if v := gauge(); v != 20 {
		t.Fatalf("in flight %v, want 20", v)
	}
	for _, end := range ends[:15] {
		end()
		end() // a second call is a no-op
	}
	if v := gauge(); v != 5 {
		t.Fatalf("in flight %v, want 5", v)
	}
}

func TestDoubleRegistrationFails(t *testing.T) {
	reg := prometheus.NewRegistry()
	if _, err := New(reg, Options{}); err != nil {
		t.Fatal(err)
	}
	if _, err := New(reg, Options{}); err == nil {
		t.Fatal("second New on the same registry succeeded")
	}
}

func TestBuckets(t *testing.T) {
	check := func(name string, b []float64, lo, hi float64) {
		t.Helper()
		if !sort.Float64sAreSorted(b) {
			t.Errorf("%s not sorted", name)
		}
		if d := b[0]/lo - 1; d > 1e-9 || d < -1e-9 {
			t.Errorf("%s starts at %v, want %v", name, b[0], lo)
		}
		if d := b[len(b)-1]/hi - 1; d > 1e-9 || d < -1e-9 {
			t.Errorf("%s ends at %v, want %v", name, b[len(b)-1], hi)
		}
	}
	check("DowntimeBuckets", DowntimeBuckets, 0.001, 60)
	check("DurationBuckets", DurationBuckets, 0.001, 1800)
	check("SizeBuckets", SizeBuckets, 1<<20, 64<<30)
}

func TestNopAndRegistry(t *testing.T) {
	var r Recorder = Nop{}
	recordAll(r)
	r.Begin(OpMove)()

	reg := NewRegistry()
	p, err := New(reg, Options{})
	if err != nil {
		t.Fatal(err)
	}
	recordAll(p)
	mfs := scrape(t, reg)
	for _, name := range []string{"go_goroutines", "process_start_time_seconds", "migrate_moves_total"} {
		if _, ok := mfs[name]; !ok {
			t.Errorf("%s missing from NewRegistry's scrape", name)
		}
	}
}
