package metrics

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"

	dto "github.com/prometheus/client_model/go"
	"sigs.k8s.io/yaml"
)

// The deploy files live in the repository's deploy/ folder.
var (
	dashboardPath  = filepath.Join("..", "deploy", "grafana", "migrate-dashboard.json")
	alertsPath     = filepath.Join("..", "deploy", "prometheus", "alerts.yml")
	prometheusPath = filepath.Join("..", "deploy", "prometheus", "prometheus.yml")
)

var metricName = regexp.MustCompile(`migrate_[a-z_]+`)

// registeredNames gathers the family names a Recorder with every sample
// recorded exposes; allMetrics is checked against the same set elsewhere.
func registeredNames(t *testing.T) map[string]bool {
	t.Helper()
	p, reg := newTest(t, nil)
	recordAll(p)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for _, mf := range mfs {
		names[mf.GetName()] = true
	}
	if len(names) != len(allMetrics) {
		t.Fatalf("gathered %d families, want %d", len(names), len(allMetrics))
	}
	return names
}

// unknownMetrics returns the migrate_ names in expr that the Recorder does
// not register, after stripping the series suffixes of histograms. A suffix
// is only stripped from a histogram family, so migrate_moves_total_count is
// still caught.
func unknownMetrics(expr string, names map[string]bool) []string {
	var bad []string
	for _, n := range metricName.FindAllString(expr, -1) {
		if names[n] {
			continue
		}
		base := n
		for _, s := range []string{"_bucket", "_sum", "_count"} {
			if strings.HasSuffix(n, s) {
				base = strings.TrimSuffix(n, s)
				break
			}
		}
		if base != n && names[base] && allMetrics[base] == dto.MetricType_HISTOGRAM {
			continue
		}
		bad = append(bad, n)
	}
	return bad
}

func TestUnknownMetrics(t *testing.T) {
	names := map[string]bool{"migrate_move_downtime_seconds": true, "migrate_moves_total": true}
	for expr, want := range map[string]string{
		`rate(migrate_move_downtime_seconds_bucket[5m])`:                          "",
		`migrate_move_downtime_seconds_sum / migrate_move_downtime_seconds_count`: "",
		`increase(migrate_moves_total{result="failure"}[10m])`:                    "",
		`migrate_moves_total_count`:                                               "migrate_moves_total_count",
		`migrate_move_downtime`:                                                   "migrate_move_downtime",
		`rate(migrate_moves[5m])`:                                                 "migrate_moves",
	} {
		if got := strings.Join(unknownMetrics(expr, names), ","); got != want {
			t.Errorf("unknownMetrics(%q) = %q, want %q", expr, got, want)
		}
	}
}

// jsonStrings collects every string value in a decoded JSON document, keyed by
// its path, so queries in targets, variables and annotations are all seen.
func jsonStrings(v any, path string, out map[string]string) {
	switch x := v.(type) {
	case string:
		out[path] = x
	case []any:
		for i, e := range x {
			jsonStrings(e, path+"["+strconv.Itoa(i)+"]", out)
		}
	case map[string]any:
		for k, e := range x {
			jsonStrings(e, path+"."+k, out)
		}
	}
}

func TestDashboard(t *testing.T) {
	names := registeredNames(t)
	data, err := os.ReadFile(dashboardPath)
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		UID           string `json:"uid"`
		Title         string `json:"title"`
		SchemaVersion int    `json:"schemaVersion"`
		Panels        []struct {
			ID      int    `json:"id"`
			Type    string `json:"type"`
			Title   string `json:"title"`
			Targets []struct {
				RefID string `json:"refId"`
				Expr  string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(data, &dash); err != nil {
		t.Fatalf("dashboard JSON: %v", err)
	}
	if dash.UID == "" || dash.Title == "" {
		t.Error("dashboard has no uid or title")
	}
	if dash.SchemaVersion < 36 || dash.SchemaVersion > 41 {
		t.Errorf("schemaVersion %d", dash.SchemaVersion)
	}

	ids := map[int]bool{}
	exprs := 0
	used := map[string]bool{}
	for _, p := range dash.Panels {
		if ids[p.ID] {
			t.Errorf("panel id %d used twice", p.ID)
		}
		ids[p.ID] = true
		if p.Type == "row" {
			continue
		}
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, tg := range p.Targets {
			if tg.Expr == "" || tg.RefID == "" {
				t.Errorf("panel %q: target without expr or refId", p.Title)
				continue
			}
			exprs++
			if !metricName.MatchString(tg.Expr) {
				t.Errorf("panel %q: expr %q uses no migrate metric", p.Title, tg.Expr)
			}
			for _, n := range metricName.FindAllString(tg.Expr, -1) {
				used[n] = true
			}
		}
	}
	if exprs == 0 {
		t.Fatal("dashboard has no queries")
	}

	// Every string anywhere (targets, template variables) may only name
	// registered metrics.
	var doc any
	if err := json.Unmarshal(data, &doc); err != nil {
		t.Fatal(err)
	}
	all := map[string]string{}
	jsonStrings(doc, "", all)
	for path, s := range all {
		if bad := unknownMetrics(s, names); len(bad) > 0 {
			t.Errorf("%s names unregistered metrics %v: %s", path, bad, s)
		}
	}

	// The panels the dashboard promises.
	for _, n := range []string{
		"migrate_move_downtime_seconds_bucket", "migrate_move_phase_duration_seconds_sum",
		"migrate_move_bytes_total", "migrate_moves_total", "migrate_checkpoint_duration_seconds_bucket",
		"migrate_restore_duration_seconds_bucket", "migrate_containers",
	} {
		if !used[n] {
			t.Errorf("no panel queries %s", n)
		}
	}
}

type ruleFile struct {
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
}

func TestAlertRules(t *testing.T) {
	names := registeredNames(t)
	data, err := os.ReadFile(alertsPath)
	if err != nil {
		t.Fatal(err)
	}
	var rf ruleFile
	if err := yaml.UnmarshalStrict(data, &rf); err != nil {
		t.Fatalf("alerts YAML: %v", err)
	}
	var alerts []string
	metricsUsed := map[string]bool{}
	for _, g := range rf.Groups {
		if g.Name == "" {
			t.Error("rule group without a name")
		}
		for _, r := range g.Rules {
			if r.Alert == "" || r.Expr == "" {
				t.Errorf("group %s: rule without alert name or expr: %+v", g.Name, r)
				continue
			}
			alerts = append(alerts, r.Alert)
			if r.Labels["severity"] == "" || r.Annotations["summary"] == "" {
				t.Errorf("%s: needs a severity label and a summary", r.Alert)
			}
			if bad := unknownMetrics(r.Expr, names); len(bad) > 0 {
				t.Errorf("%s names unregistered metrics %v", r.Alert, bad)
			}
			for _, n := range metricName.FindAllString(r.Expr, -1) {
				metricsUsed[n] = true
			}
			if !metricName.MatchString(r.Expr) && !regexp.MustCompile(`\bup\b`).MatchString(r.Expr) {
				t.Errorf("%s: expr %q uses neither a migrate metric nor up", r.Alert, r.Expr)
			}
		}
	}
	sort.Strings(alerts)
	want := []string{"MigrateAgentDown", "MigrateCheckpointFailures", "MigrateMoveDowntimeHigh", "MigrateMoveFailed"}
	if strings.Join(alerts, ",") != strings.Join(want, ",") {
		t.Errorf("alerts %v, want %v", alerts, want)
	}
	for _, n := range []string{"migrate_moves_total", "migrate_move_downtime_seconds_bucket", "migrate_checkpoints_total"} {
		if !metricsUsed[n] {
			t.Errorf("no alert uses %s", n)
		}
	}
}

func TestPrometheusConfig(t *testing.T) {
	data, err := os.ReadFile(prometheusPath)
	if err != nil {
		t.Fatal(err)
	}
	var cfg struct {
		Global        map[string]string `json:"global"`
		RuleFiles     []string          `json:"rule_files"`
		ScrapeConfigs []struct {
			JobName       string `json:"job_name"`
			MetricsPath   string `json:"metrics_path"`
			StaticConfigs []struct {
				Targets []string `json:"targets"`
			} `json:"static_configs"`
		} `json:"scrape_configs"`
	}
	if err := yaml.UnmarshalStrict(data, &cfg); err != nil {
		t.Fatalf("prometheus.yml: %v", err)
	}
	if len(cfg.RuleFiles) != 1 || cfg.RuleFiles[0] != filepath.Base(alertsPath) {
		t.Errorf("rule_files %v, want [alerts.yml]", cfg.RuleFiles)
	}
	var targets []string
	for _, sc := range cfg.ScrapeConfigs {
		if sc.MetricsPath != "/metrics" {
			t.Errorf("job %s scrapes %q", sc.JobName, sc.MetricsPath)
		}
		for _, s := range sc.StaticConfigs {
			targets = append(targets, s.Targets...)
		}
	}
	if strings.Join(targets, ",") != "node1:9464,node2:9464" {
		t.Errorf("targets %v", targets)
	}
}
