package e2e

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
)

// TestMetricsEndpoint: the agent's /metrics reports what it did, with
// Prometheus names: a checkpoint of a real container, and the
// containers by status.
func TestMetricsEndpoint(t *testing.T) {
	t.Parallel()
	port := freePort(t)
	a := newAgent(t, agentConfig{extra: fmt.Sprintf("metrics:\n  listen: 127.0.0.1:%d\n", port)})
	id := containerID(t, "metrics")
	must(t, a.ctl("run", "-b", counterWorkload(t), id), "run")
	a.waitStatus(id, running)
	must(t, a.ctl("checkpoint", "--leave-running", "--name", id+"-ck", id), "checkpoint")

	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/metrics", port))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	text := string(body)
	for _, want := range []string{
		`migrate_checkpoints_total{reason="none",result="success"} 1`,
		`migrate_checkpoint_downtime_seconds_count 1`,
		`migrate_containers{status="running"} 1`,
		`migrate_agent_info{`,
	} {
		if !strings.Contains(text, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	if t.Failed() {
		for _, l := range strings.Split(text, "\n") {
			if strings.HasPrefix(l, "migrate_") {
				t.Log(l)
			}
		}
	}
}
