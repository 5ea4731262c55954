package metrics

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
)

// alertsTestPath holds promtool unit tests of the alert rules.
var alertsTestPath = filepath.Join("..", "deploy", "prometheus", "alerts_test.yml")

// promtool returns the path of Debian's promtool (package prometheus, installed by
// scripts/setup.sh), or skips.
func promtool(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("promtool")
	if err != nil {
		t.Skipf("promtool not installed (Debian package prometheus; scripts/setup.sh installs it): %v", err)
	}
	return p
}

// runPromtool runs promtool with args and stdin, failing the test with its output
// unless it exits 0.
func runPromtool(t *testing.T, stdin io.Reader, args ...string) string {
	t.Helper()
	cmd := exec.Command(promtool(t), args...)
	cmd.Stdin = stdin
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

func TestPromtoolCheckRules(t *testing.T) {
	t.Parallel()
	out := runPromtool(t, nil, "check", "rules", alertsPath)
	if !strings.Contains(out, "SUCCESS: 4 rules found") {
		t.Errorf("promtool check rules: %s", out)
	}
}

// TestPromtoolCheckConfig checks prometheus.yml as shipped; promtool also checks
// the rule file it names, found beside it.
func TestPromtoolCheckConfig(t *testing.T) {
	t.Parallel()
	out := runPromtool(t, nil, "check", "config", prometheusPath)
	if !strings.Contains(out, "SUCCESS: 1 rule files found") || !strings.Contains(out, "SUCCESS: 4 rules found") {
		t.Errorf("promtool check config: %s", out)
	}
}

// TestPromtoolTestRules runs the alert rules' unit tests, after checking that they
// test every alert both firing and not firing.
func TestPromtoolTestRules(t *testing.T) {
	t.Parallel()
	data, err := os.ReadFile(alertsTestPath)
	if err != nil {
		t.Fatal(err)
	}
	var tests struct {
		RuleFiles          []string `json:"rule_files"`
		EvaluationInterval string   `json:"evaluation_interval"`
		Tests              []struct {
			Interval    string `json:"interval"`
			InputSeries []struct {
				Series string `json:"series"`
				Values string `json:"values"`
			} `json:"input_series"`
			AlertRuleTest []struct {
				EvalTime  string `json:"eval_time"`
				AlertName string `json:"alertname"`
				ExpAlerts []struct {
					ExpLabels      map[string]string `json:"exp_labels"`
					ExpAnnotations map[string]string `json:"exp_annotations"`
				} `json:"exp_alerts"`
			} `json:"alert_rule_test"`
		} `json:"tests"`
	}
	if err := yaml.UnmarshalStrict(data, &tests); err != nil {
		t.Fatalf("%s: %v", alertsTestPath, err)
	}
	if len(tests.RuleFiles) != 1 || tests.RuleFiles[0] != filepath.Base(alertsPath) {
		t.Errorf("%s tests rule files %v, want [alerts.yml]", alertsTestPath, tests.RuleFiles)
	}
	fires, quiet := map[string]bool{}, map[string]bool{}
	for _, tc := range tests.Tests {
		for _, a := range tc.AlertRuleTest {
			if len(a.ExpAlerts) > 0 {
				fires[a.AlertName] = true
			} else {
				quiet[a.AlertName] = true
			}
		}
	}
	data, err = os.ReadFile(alertsPath)
	if err != nil {
		t.Fatal(err)
	}
	var rf ruleFile
	if err := yaml.UnmarshalStrict(data, &rf); err != nil {
		t.Fatalf("alerts YAML: %v", err)
	}
	var alerts []string
	for _, g := range rf.Groups {
		for _, r := range g.Rules {
			if r.Alert != "" {
				alerts = append(alerts, r.Alert)
			}
		}
	}
	sort.Strings(alerts)
	if len(alerts) == 0 {
		t.Fatal("no alerts in alerts.yml")
	}
	for _, a := range alerts {
		if !fires[a] || !quiet[a] {
			t.Errorf("%s: alert %s needs a case where it fires and one where it does not (fires %v, quiet %v)",
				alertsTestPath, a, fires[a], quiet[a])
		}
	}

	out := runPromtool(t, nil, "test", "rules", alertsTestPath)
	if !strings.Contains(out, "SUCCESS") {
		t.Errorf("promtool test rules: %s", out)
	}
}

// TestPromtoolCheckMetrics lints the agent's exposition with every metric
// recorded: names, units, counter suffixes and help texts.
func TestPromtoolCheckMetrics(t *testing.T) {
	t.Parallel()
	p, reg := newTest(t, nil)
	recordAll(p)
	srv := httptest.NewServer(Handler(reg))
	defer srv.Close()
	req, err := http.NewRequest(http.MethodGet, srv.URL+"/metrics", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Accept", "text/plain; version=0.0.4")
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK || !bytes.Contains(body, []byte("migrate_move_downtime_seconds_count")) {
		t.Fatalf("scrape: status %d: %s", resp.StatusCode, body)
	}
	runPromtool(t, bytes.NewReader(body), "check", "metrics")
}
