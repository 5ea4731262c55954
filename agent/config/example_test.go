package config

import (
	"os"
	"testing"
)

// TestDeployExample keeps deploy/migrated.yaml valid.
func TestDeployExample(t *testing.T) {
	b, err := os.ReadFile("../../deploy/migrated.yaml")
	if err != nil {
		t.Fatal(err)
	}
	c := Default()
	if err := Parse(b, c); err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if c.Node != "node1" || len(c.Peers) != 2 || c.TLS.Cert != "/etc/migrate/tls/node1.pem" {
		t.Errorf("example parsed as %+v", c)
	}
}
