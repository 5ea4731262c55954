package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestControlSocketRootOnly checks that a non-root user cannot use the control
// socket: the file mode refuses it, and SO_PEERCRED refuses it even when the mode is
// opened up by mistake.
func TestControlSocketRootOnly(t *testing.T) {
	t.Parallel()
	a := newAgent(t, agentConfig{})
	st, err := os.Stat(a.sock)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode()&os.ModeSocket == 0 || st.Mode().Perm() != 0o600 {
		t.Errorf("control socket mode %v, want a 0600 socket", st.Mode())
	}
	nobody := []string{"setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups"}
	wantFail(t, runCtl(t, nobody, "--socket", a.sock, "ps"), 7, "root only")

	// Open the path and the file for everyone: the peer credential check still refuses.
	if err := os.Chmod(a.dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(a.sock, 0o666); err != nil {
		t.Fatal(err)
	}
	r := runCtl(t, nobody, "--socket", a.sock, "ps")
	wantFail(t, r, 7, "uid 65534")
	must(t, a.ctl("ps"), "root still allowed")
}

// cluster makes a cluster directory with certificates for nodes.
func cluster(t *testing.T, a *agent, nodes ...string) string {
	t.Helper()
	dir := t.TempDir()
	must(t, a.ctl("cluster", "init", "--dir", dir, "--nodes", strings.Join(nodes, ",")), "cluster init")
	return dir
}

type nodeStatus struct {
	Name      string `json:"name"`
	Reachable bool   `json:"reachable"`
	Error     string `json:"error"`
	Self      bool   `json:"self"`
}

func (a *agent) nodes() map[string]nodeStatus {
	a.t.Helper()
	r := must(a.t, a.ctl("nodes", "-o", "json"), "nodes")
	var out struct {
		Nodes []nodeStatus `json:"nodes"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &out); err != nil {
		a.t.Fatalf("nodes -o json: %v: %s", err, r.stdout)
	}
	m := map[string]nodeStatus{}
	for _, n := range out.Nodes {
		m[n.Name] = n
	}
	return m
}

// TestPeerMutualTLS starts three agents: n2 shares n1's cluster CA, n3 has a
// certificate from another CA. n1 reaches n2, and refuses n3 with a clear error;
// a peer entry whose name does not match the certificate is refused too.
func TestPeerMutualTLS(t *testing.T) {
	t.Parallel()
	p1, p2, p3 := freePort(t), freePort(t), freePort(t)
	bootstrap := newAgent(t, agentConfig{node: "boot"})
	good := cluster(t, bootstrap, "n1", "n2")
	other := cluster(t, bootstrap, "n1", "n3")

	peerCfg := func(dir string, port int, peers map[string]int) string {
		s := fmt.Sprintf("tls:\n  dir: %s\npeer:\n  listen: 127.0.0.1:%d\npeers:\n", dir, port)
		for n, p := range peers {
			s += fmt.Sprintf("  %s: 127.0.0.1:%d\n", n, p)
		}
		return s
	}
	n1 := newAgent(t, agentConfig{node: "n1", extra: peerCfg(good, p1, map[string]int{"n2": p2, "n3": p3, "n4": p2})})
	n2 := newAgent(t, agentConfig{node: "n2", extra: peerCfg(good, p2, map[string]int{"n1": p1})})
	n3 := newAgent(t, agentConfig{node: "n3", extra: peerCfg(other, p3, map[string]int{"n1": p1})})

	ns := n1.nodes()
	if !ns["n1"].Self || !ns["n1"].Reachable {
		t.Errorf("n1 does not list itself: %+v", ns["n1"])
	}
	if !ns["n2"].Reachable {
		t.Errorf("n1 cannot reach n2 of the same cluster: %q", ns["n2"].Error)
	}
	if n := ns["n3"]; n.Reachable || !strings.Contains(n.Error, "certificate signed by unknown authority") {
		t.Errorf("n1 -> n3 (other CA): reachable %v, error %q; want refused as unknown authority", n.Reachable, n.Error)
	}
	if n := ns["n4"]; n.Reachable || !strings.Contains(n.Error, "n4") {
		t.Errorf("n1 -> n4 (n2's address): reachable %v, error %q; want refused for the name", n.Reachable, n.Error)
	}
	// The other side refuses too: n3's client certificate is not of n1's CA.
	if n := n3.nodes()["n1"]; n.Reachable || n.Error == "" {
		t.Errorf("n3 -> n1: reachable %v, error %q; want refused", n.Reachable, n.Error)
	}
	if n := n2.nodes()["n1"]; !n.Reachable {
		t.Errorf("n2 -> n1: %q", n.Error)
	}

	// migratectl over TCP with the cluster's admin certificate, and with another's.
	host := fmt.Sprintf("tcp://127.0.0.1:%d", p1)
	r := must(t, runCtl(t, nil, "--host", host, "--tls-dir", good, "--node", "n1", "version"), "version over mTLS")
	if !strings.Contains(r.stdout, "node n1") {
		t.Errorf("version over mTLS: %q", r.stdout)
	}
	r = runCtl(t, nil, "--host", host, "--tls-dir", other, "--node", "n1", "ps")
	wantFail(t, r, 6, "unknown authority")
	// A node certificate is not an admin certificate.
	nodeOnly := t.TempDir()
	for _, f := range []string{"ca.pem", "n2.pem", "n2-key.pem"} {
		b, err := os.ReadFile(filepath.Join(good, f))
		if err != nil {
			t.Fatal(err)
		}
		f = strings.Replace(f, "n2", "admin", 1)
		if err := os.WriteFile(filepath.Join(nodeOnly, f), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	wantFail(t, runCtl(t, nil, "--host", host, "--tls-dir", nodeOnly, "--node", "n1", "ps"), 7, "may not call")
}
