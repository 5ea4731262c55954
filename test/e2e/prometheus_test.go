package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/migratehq/migrate/metrics"
)

// prometheusBin is Debian's prometheus package's server (scripts/setup.sh installs it).
const prometheusBin = "/usr/bin/prometheus"

// promServer is a Prometheus server run by a test.
type promServer struct {
	t    *testing.T
	base string // http://127.0.0.1:port
	log  *bytes.Buffer
}

// startPrometheus runs Prometheus scraping targets every second, with the repository's
// alert rules loaded, its own storage and a web listener on a free loopback port. It is
// killed and its files removed when the test ends.
func startPrometheus(t *testing.T, targets ...string) *promServer {
	t.Helper()
	if _, err := os.Stat(prometheusBin); err != nil {
		t.Skipf("%s not installed (Debian package prometheus; scripts/setup.sh installs it): %v", prometheusBin, err)
	}
	rules, err := filepath.Abs(filepath.Join("..", "..", "deploy", "prometheus", "alerts.yml"))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	quoted := make([]string, len(targets))
	for i, tg := range targets {
		quoted[i] = strconv.Quote(tg)
	}
	cfg := fmt.Sprintf(`global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
rule_files:
  - %s
scrape_configs:
  - job_name: migrated
    static_configs:
      - targets: [%s]
`, strconv.Quote(rules), strings.Join(quoted, ", "))
	cfgPath := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	p := &promServer{t: t, base: "http://" + addr, log: &bytes.Buffer{}}
	cmd := exec.Command(prometheusBin,
		"--config.file="+cfgPath,
		"--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+addr,
		"--log.level=warn")
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = p.log, p.log
	// Should the test binary die, Prometheus goes with it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start prometheus: %v", err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	// Registered after t.TempDir, so it runs before the directory is removed.
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
		if t.Failed() {
			t.Logf("prometheus log:\n%s", p.log)
		}
	})

	deadline := time.Now().Add(20 * time.Second)
	for {
		select {
		case <-exited:
			t.Fatalf("prometheus exited: %s", p.log)
		default:
		}
		if resp, err := http.Get(p.base + "/-/ready"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return p
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("prometheus not ready after 20s: %s", p.log)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// get fetches an HTTP API path and decodes its data field into v.
func (p *promServer) get(path string, v any) error {
	resp, err := http.Get(p.base + path)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	var env struct {
		Status string          `json:"status"`
		Error  string          `json:"error"`
		Data   json.RawMessage `json:"data"`
	}
	if err := json.Unmarshal(body, &env); err != nil {
		return fmt.Errorf("GET %s: %w: %s", path, err, body)
	}
	if env.Status != "success" {
		return fmt.Errorf("GET %s: %s: %s", path, env.Status, env.Error)
	}
	return json.Unmarshal(env.Data, v)
}

// sample is one element of an instant vector.
type sample struct {
	Labels map[string]string
	Value  float64
}

// query runs an instant PromQL query that must return a vector.
func (p *promServer) query(q string) ([]sample, error) {
	var data struct {
		ResultType string `json:"resultType"`
		Result     []struct {
			Metric map[string]string `json:"metric"`
			Value  [2]any            `json:"value"` // [unix time, "value"]
		} `json:"result"`
	}
	if err := p.get("/api/v1/query?query="+url.QueryEscape(q), &data); err != nil {
		return nil, err
	}
	if data.ResultType != "vector" {
		return nil, fmt.Errorf("query %s: result type %s, want vector", q, data.ResultType)
	}
	out := make([]sample, 0, len(data.Result))
	for _, r := range data.Result {
		s, _ := r.Value[1].(string)
		v, err := strconv.ParseFloat(s, 64)
		if err != nil {
			return nil, fmt.Errorf("query %s: value %v: %w", q, r.Value[1], err)
		}
		out = append(out, sample{Labels: r.Metric, Value: v})
	}
	return out, nil
}

// waitQuery repeats q until ok accepts its result, and returns that result.
func (p *promServer) waitQuery(q string, timeout time.Duration, ok func([]sample) bool) []sample {
	p.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		res, err := p.query(q)
		if err == nil && ok(res) {
			return res
		}
		if time.Now().After(deadline) {
			p.t.Fatalf("after %v, %s = %v (error %v)", timeout, q, res, err)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// quantileEstimate is what histogram_quantile(q, ...) answers for a histogram
// holding the single observation v: linear interpolation inside v's bucket.
func quantileEstimate(bounds []float64, q, v float64) float64 {
	lo := 0.0
	for _, hi := range bounds {
		if v <= hi {
			return lo + (hi-lo)*q
		}
		lo = hi
	}
	return lo // in +Inf: the highest finite bound
}

// TestPrometheusScrapesMove runs a real Prometheus against two agents: both targets
// are up, the alert rules load and evaluate, and after a cold move the downtime
// histogram holds the move's one sample, from the source agent, and
// histogram_quantile over it answers the value of the move's bucket.
func TestPrometheusScrapesMove(t *testing.T) {
	t.Parallel()
	if _, err := os.Stat(prometheusBin); err != nil {
		t.Skipf("%s not installed (Debian package prometheus; scripts/setup.sh installs it): %v", prometheusBin, err)
	}
	m1, m2 := fmt.Sprintf("127.0.0.1:%d", freePort(t)), fmt.Sprintf("127.0.0.1:%d", freePort(t))
	listen := func(addr string) string { return fmt.Sprintf("metrics:\n  listen: %s\n", addr) }
	n1, n2 := movePair(t, listen(m1), listen(m2))
	prom := startPrometheus(t, m1, m2)

	// Both targets are scraped and healthy.
	prom.waitQuery(`up{job="migrated"} == 1`, 15*time.Second, func(s []sample) bool { return len(s) == 2 })
	var targets struct {
		ActiveTargets []struct {
			Labels    map[string]string `json:"labels"`
			Health    string            `json:"health"`
			LastError string            `json:"lastError"`
		} `json:"activeTargets"`
	}
	if err := prom.get("/api/v1/targets?state=active", &targets); err != nil {
		t.Fatal(err)
	}
	var up []string
	for _, tg := range targets.ActiveTargets {
		if tg.Health != "up" {
			t.Errorf("target %s: %s %s", tg.Labels["instance"], tg.Health, tg.LastError)
		}
		up = append(up, tg.Labels["instance"])
	}
	sort.Strings(up)
	want := []string{m1, m2}
	sort.Strings(want)
	if strings.Join(up, " ") != strings.Join(want, " ") {
		t.Errorf("active targets %v, want %v", up, want)
	}
	prom.waitQuery(`migrate_agent_info`, 10*time.Second, func(s []sample) bool {
		nodes := map[string]string{}
		for _, x := range s {
			nodes[x.Labels["instance"]] = x.Labels["node"]
		}
		return len(s) == 2 && nodes[m1] == "n1" && nodes[m2] == "n2"
	})

	// No move yet: no downtime sample anywhere.
	if s, err := prom.query(`migrate_move_downtime_seconds_count`); err != nil || len(s) != 0 {
		t.Errorf("before the move: migrate_move_downtime_seconds_count = %v (error %v)", s, err)
	}

	id := containerID(t, "prom")
	must(t, n1.ctl("run", "-b", counterWorkload(t), id), "run")
	n1.waitStatus(id, running)
	mv := moveJSON(t, n1, id, "n2")
	n2.waitStatus(id, running)
	downtime, err := time.ParseDuration(mv.Downtime)
	if err != nil || downtime <= 0 {
		t.Fatalf("move downtime %q: %v", mv.Downtime, err)
	}

	// The source records the move: one successful cold sample, on n1 only.
	cnt := prom.waitQuery(`migrate_move_downtime_seconds_count`, 15*time.Second, func(s []sample) bool { return len(s) > 0 })
	if len(cnt) != 1 || cnt[0].Value != 1 || cnt[0].Labels["instance"] != m1 ||
		cnt[0].Labels["mode"] != "cold" || cnt[0].Labels["result"] != "success" {
		t.Errorf("migrate_move_downtime_seconds_count = %v, want one sample of 1 from %s with mode cold, result success", cnt, m1)
	}
	sum, err := prom.query(fmt.Sprintf(`migrate_move_downtime_seconds_sum{instance=%q}`, m1))
	if err != nil || len(sum) != 1 || math.Abs(sum[0].Value-downtime.Seconds()) > 1e-6 {
		t.Errorf("migrate_move_downtime_seconds_sum = %v (error %v), want the move's downtime %v", sum, err, downtime)
	}
	moves, err := prom.query(`migrate_moves_total`)
	if err != nil || len(moves) != 1 || moves[0].Value != 1 || moves[0].Labels["result"] != "success" || moves[0].Labels["reason"] != "none" {
		t.Errorf("migrate_moves_total = %v (error %v), want one successful move", moves, err)
	}

	// histogram_quantile answers a number: the interpolation inside the move's bucket.
	q := fmt.Sprintf(`histogram_quantile(0.5, sum by (le) (migrate_move_downtime_seconds_bucket{instance=%q, result="success"}))`, m1)
	res, err := prom.query(q)
	if err != nil || len(res) != 1 {
		t.Fatalf("%s = %v (error %v), want one number", q, res, err)
	}
	est := quantileEstimate(metrics.DowntimeBuckets, 0.5, downtime.Seconds())
	if math.IsNaN(res[0].Value) || math.Abs(res[0].Value-est) > 1e-9*est {
		t.Errorf("%s = %v, want %v (downtime %v)", q, res[0].Value, est, downtime)
	}
	t.Logf("move downtime %v; Prometheus p50 estimate %.4fs", downtime, res[0].Value)

	dashboardQueries(t, prom, m1, m2)

	// The alert rules loaded and evaluate without errors against real series, and
	// nothing fires: the move succeeded and both agents are up.
	var rules struct {
		Groups []struct {
			Name  string `json:"name"`
			Rules []struct {
				Name      string `json:"name"`
				Health    string `json:"health"`
				LastError string `json:"lastError"`
				State     string `json:"state"`
			} `json:"rules"`
		} `json:"groups"`
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		if err := prom.get("/api/v1/rules", &rules); err != nil {
			t.Fatal(err)
		}
		ok, n := 0, 0
		for _, g := range rules.Groups {
			for _, r := range g.Rules {
				n++
				if r.Health == "ok" {
					ok++
				}
			}
		}
		if n > 0 && ok == n {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("rules not all healthy: %+v", rules.Groups)
		}
		time.Sleep(250 * time.Millisecond)
	}
	var names []string
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			names = append(names, r.Name)
			if r.State != "inactive" {
				t.Errorf("alert %s is %s", r.Name, r.State)
			}
		}
	}
	if len(names) != 4 {
		t.Errorf("Prometheus loaded rules %v, want the 4 of alerts.yml", names)
	}
}

// dashboardQueries runs every query of the Grafana dashboard against the real
// Prometheus, with Grafana's variables filled in as Grafana would: each must be
// valid PromQL, and those over series every agent exports from its start must
// return data. Rates over the move's own series may still be empty here: those
// series appear with the move, and rate() needs two samples of them. The agent
// variable must list both agents.
func dashboardQueries(t *testing.T, prom *promServer, agents ...string) {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("..", "..", "deploy", "grafana", "migrate-dashboard.json"))
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(data, &dash); err != nil {
		t.Fatalf("dashboard: %v", err)
	}
	fromStart := regexp.MustCompile(`migrate_(containers|operations_in_flight|agent_info|agent_start_time_seconds|move_bytes_total)\b`)
	// $__rate_interval is at least four scrape intervals; 1m covers the whole test.
	vars := strings.NewReplacer(`$instance`, `.*`, `$__rate_interval`, `1m`)
	n := 0
	for _, p := range dash.Panels {
		for _, tg := range p.Targets {
			n++
			q := vars.Replace(tg.Expr)
			res, err := prom.query(q)
			if err != nil {
				t.Errorf("panel %q: %v", p.Title, err)
				continue
			}
			if len(res) == 0 && fromStart.MatchString(q) {
				t.Errorf("panel %q: %s returned no series", p.Title, q)
			}
		}
	}
	if n == 0 {
		t.Error("dashboard has no queries")
	}
	var instances []string
	if err := prom.get("/api/v1/label/instance/values?match[]="+url.QueryEscape("migrate_agent_info"), &instances); err != nil {
		t.Fatal(err)
	}
	sort.Strings(instances)
	want := append([]string(nil), agents...)
	sort.Strings(want)
	if strings.Join(instances, " ") != strings.Join(want, " ") {
		t.Errorf("agent variable lists %v, want %v", instances, want)
	}
}
