package config

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"
)

func TestDefaultsAreValid(t *testing.T) {
	c := Default()
	c.Node = "node1" // the host name may not be a valid node name on every machine
	if err := c.Validate(); err != nil {
		t.Fatalf("defaults invalid: %v", err)
	}
	if c.DataDir != "/var/lib/migrate" || c.ControlSocket != "/run/migrate/migrated.sock" ||
		time.Duration(c.StopTimeout) != 10*time.Second || c.Peer.Listen != "" || len(c.Peers) != 0 {
		t.Errorf("unexpected defaults: %+v", c)
	}
}

func TestParseOverlaysDefaults(t *testing.T) {
	c := Default()
	err := Parse([]byte("node: n1\nstopTimeout: 3s\ntls:\n  dir: /etc/migrate/tls\npeer:\n  listen: ':7443'\npeers:\n  n2: 10.0.0.2:7443\n"), c)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if c.DataDir != "/var/lib/migrate" {
		t.Errorf("unset field lost its default: %q", c.DataDir)
	}
	if time.Duration(c.StopTimeout) != 3*time.Second || c.Peers["n2"] != "10.0.0.2:7443" {
		t.Errorf("parsed %+v", c)
	}
	if c.TLS.CA != "/etc/migrate/tls/ca.pem" || c.TLS.Cert != "/etc/migrate/tls/n1.pem" || c.TLS.Key != "/etc/migrate/tls/n1-key.pem" {
		t.Errorf("tls paths from dir: %+v", c.TLS)
	}
}

func TestInvalid(t *testing.T) {
	for name, tc := range map[string]struct{ yaml, want string }{
		"unknown key":     {"nodename: x\n", "unknown field"},
		"bad duration":    {"stopTimeout: soon\n", "duration"},
		"relative data":   {"dataDir: data\n", "dataDir"},
		"abstract socket": {"controlSocket: '@migrate'\n", "controlSocket"},
		"listen no tls":   {"peer:\n  listen: ':7443'\n", "mutual TLS"},
		"peers no tls":    {"peers:\n  n2: a:1\n", "mutual TLS"},
		"bad node":        {"node: Node_1\n", "node"},
		"peer is self":    {"node: n1\ntls:\n  dir: /x\npeers:\n  n1: a:1\n", "this node"},
		"peer bad addr":   {"tls:\n  dir: /x\npeers:\n  n2: nohostport\n", "address"},
		"partial tls":     {"tls:\n  ca: /ca.pem\n", "ca, cert and key"},
		"bridge name":     {"network:\n  bridge: a/b\n", "network.bridge"},
		"bad gateway":     {"network:\n  bridge: br0\n  gateway: 10.1\n", "network.gateway"},
		"gateway alone":   {"network:\n  gateway: 10.88.0.1\n", "needs network.bridge"},
	} {
		t.Run(name, func(t *testing.T) {
			c := Default()
			c.Node = "n0"
			err := Parse([]byte(tc.yaml), c)
			if err == nil {
				err = c.Validate()
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one mentioning %q", err, tc.want)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("multi-line error: %q", err)
			}
		})
	}
}

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "m.yaml")
	if err := os.WriteFile(p, []byte("node: [oops\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(p); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), p) {
		t.Errorf("Load(malformed) = %v, want ErrInvalid naming the file", err)
	}
	if _, err := Load(filepath.Join(dir, "missing.yaml")); !errors.Is(err, ErrInvalid) {
		t.Errorf("Load(missing) = %v, want ErrInvalid", err)
	}
}

func TestFlagsOverride(t *testing.T) {
	fs := pflag.NewFlagSet("t", pflag.ContinueOnError)
	o := AddFlags(fs)
	if err := fs.Parse([]string{"--node", "n9", "--peer", "n2=h:1", "--peer", "n3=h:2", "--stop-timeout", "1s"}); err != nil {
		t.Fatal(err)
	}
	c := Default()
	c.DataDir = "/from/file"
	if err := o.Apply(c); err != nil {
		t.Fatal(err)
	}
	if c.Node != "n9" || c.DataDir != "/from/file" || len(c.Peers) != 2 || c.Peers["n3"] != "h:2" || time.Duration(c.StopTimeout) != time.Second {
		t.Errorf("after flags: %+v", c)
	}
	fs = pflag.NewFlagSet("t", pflag.ContinueOnError)
	o = AddFlags(fs)
	_ = fs.Parse([]string{"--peer", "bad"})
	if err := o.Apply(Default()); !errors.Is(err, ErrInvalid) {
		t.Errorf("--peer bad: %v", err)
	}
}

func TestNetworkConfig(t *testing.T) {
	c := Default()
	c.Node = "n1"
	if err := Parse([]byte("network:\n  bridge: br0\n  gateway: 10.88.0.1\n"), c); err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if c.Network.Bridge != "br0" || c.Network.Gateway != "10.88.0.1" {
		t.Errorf("network: %+v", c.Network)
	}
	fs := pflag.NewFlagSet("t", pflag.ContinueOnError)
	o := AddFlags(fs)
	if err := fs.Parse([]string{"--network-bridge", "br7"}); err != nil {
		t.Fatal(err)
	}
	if err := o.Apply(c); err != nil || c.Network.Bridge != "br7" || c.Network.Gateway != "10.88.0.1" {
		t.Errorf("after --network-bridge: %+v, %v", c.Network, err)
	}
}
