package config

import (
	"fmt"
	"strings"
	"time"

	"github.com/spf13/pflag"
)

// Overrides are command-line flags that override the configuration file.
type Overrides struct {
	fs            *pflag.FlagSet
	node          string
	dataDir       string
	controlSocket string
	peerListen    string
	tlsDir        string
	peers         []string
	stopTimeout   time.Duration
	criu          string
	metricsListen string
	networkBridge string
}

// AddFlags registers the override flags on fs.
func AddFlags(fs *pflag.FlagSet) *Overrides {
	o := &Overrides{fs: fs}
	fs.StringVar(&o.node, "node", "", "node name (default: host name)")
	fs.StringVar(&o.dataDir, "data-dir", "", "data directory (default /var/lib/migrate)")
	fs.StringVar(&o.controlSocket, "socket", "", "control socket path (default /run/migrate/migrated.sock)")
	fs.StringVar(&o.peerListen, "peer-listen", "", "TCP address of the mTLS peer listener, e.g. :7443")
	fs.StringVar(&o.tlsDir, "tls-dir", "", "directory with ca.pem, <node>.pem, <node>-key.pem")
	fs.StringSliceVar(&o.peers, "peer", nil, "peer as name=host:port (repeatable; replaces the file's peers)")
	fs.DurationVar(&o.stopTimeout, "stop-timeout", 0, "default stop grace period")
	fs.StringVar(&o.criu, "criu", "", "CRIU binary (default /usr/local/sbin/criu)")
	fs.StringVar(&o.metricsListen, "metrics-listen", "", "address of the Prometheus /metrics listener, e.g. :9464")
	fs.StringVar(&o.networkBridge, "network-bridge", "", "Linux bridge joined to the shared network; containers created with an address attach to it")
	return o
}

// Apply sets the fields whose flags were given.
func (o *Overrides) Apply(c *Config) error {
	if o.fs.Changed("node") {
		c.Node = o.node
	}
	if o.fs.Changed("data-dir") {
		c.DataDir = o.dataDir
	}
	if o.fs.Changed("criu") {
		c.CRIU = o.criu
	}
	if o.fs.Changed("metrics-listen") {
		c.Metrics.Listen = o.metricsListen
	}
	if o.fs.Changed("network-bridge") {
		c.Network.Bridge = o.networkBridge
	}
	if o.fs.Changed("socket") {
		c.ControlSocket = o.controlSocket
	}
	if o.fs.Changed("peer-listen") {
		c.Peer.Listen = o.peerListen
	}
	if o.fs.Changed("tls-dir") {
		c.TLS = TLSConfig{Dir: o.tlsDir}
	}
	if o.fs.Changed("stop-timeout") {
		c.StopTimeout = Duration(o.stopTimeout)
	}
	if o.fs.Changed("peer") {
		c.Peers = map[string]string{}
		for _, p := range o.peers {
			name, addr, ok := strings.Cut(p, "=")
			if !ok || name == "" || addr == "" {
				return fmt.Errorf("%w: --peer %q: want name=host:port", ErrInvalid, p)
			}
			c.Peers[name] = addr
		}
	}
	return nil
}
