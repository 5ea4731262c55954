package config

import (
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"time"

	"sigs.k8s.io/yaml"
)

// DefaultPath is read when no configuration file is named and it exists.
const DefaultPath = "/etc/migrate/migrated.yaml"

//go:embed default.yaml
var defaultYAML []byte

// ErrInvalid is wrapped by every validation and parse error.
var ErrInvalid = errors.New("invalid configuration")

// Config is migrated's configuration. Field names are the YAML keys.
type Config struct {
	// Node is this node's name; peers know it by this name and its certificate carries it.
	Node string `json:"node"`
	// DataDir holds the agent's state: containers, logs, runtime state.
	DataDir string `json:"dataDir"`
	// ControlSocket is the unix socket path of the control API (mode 0600, uid 0 only).
	ControlSocket string `json:"controlSocket"`
	// CRIU is the CRIU binary checkpoints and restores run: an explicit path,
	// never a PATH lookup (scripts/setup.sh installs CRIU >= 4.1 there).
	CRIU string `json:"criu"`
	// StopTimeout is the default grace period of stop before SIGKILL.
	StopTimeout Duration   `json:"stopTimeout"`
	Peer        PeerConfig `json:"peer"`
	TLS         TLSConfig  `json:"tls"`
	// Peers maps peer node names to their host:port.
	Peers map[string]string `json:"peers"`
	Logs  LogConfig         `json:"logs"`
	// Metrics serves Prometheus metrics over plain HTTP on Listen ("" disables).
	Metrics MetricsConfig `json:"metrics"`
	// Network attaches containers given an address to a network the nodes share.
	Network NetworkConfig `json:"network"`
}

// NetworkConfig is the node's attachment to the network containers keep their
// address on (docs/network.md).
type NetworkConfig struct {
	// Bridge is an existing Linux bridge in the agent's network namespace,
	// joined to the shared L2 network; "" means containers cannot get an address.
	Bridge string `json:"bridge"`
	// Gateway, optional, is the default route given to containers.
	Gateway string `json:"gateway"`
}

// MetricsConfig is the /metrics listener.
type MetricsConfig struct {
	Listen string `json:"listen"`
}

// PeerConfig is the agent-to-agent listener.
type PeerConfig struct {
	// Listen is the TCP address of the mTLS peer listener; empty disables it.
	Listen string `json:"listen"`
	// Advertise is the address other nodes reach this one at (informational for now).
	Advertise string `json:"advertise"`
}

// TLSConfig names the cluster TLS material. Dir, as written by `migratectl cluster
// init`, supplies defaults for the three paths: ca.pem, <node>.pem, <node>-key.pem.
type TLSConfig struct {
	Dir  string `json:"dir"`
	CA   string `json:"ca"`
	Cert string `json:"cert"`
	Key  string `json:"key"`
}

// LogConfig bounds each container's stdio log.
type LogConfig struct {
	MaxFileBytes int64 `json:"maxFileBytes"`
	MaxFiles     int   `json:"maxFiles"`
}

// Duration is a time.Duration written as "10s" in YAML.
type Duration time.Duration

// UnmarshalJSON accepts a Go duration string.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("duration must be a string like \"10s\": %s", b)
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return err
	}
	*d = Duration(v)
	return nil
}

// MarshalJSON writes the duration as a string.
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

// Default returns the embedded defaults, with Node set to the host name.
func Default() *Config {
	var c Config
	if err := yaml.UnmarshalStrict(defaultYAML, &c); err != nil {
		panic("config: embedded default.yaml: " + err.Error()) // a build defect, caught by tests
	}
	if c.Node == "" {
		if h, err := os.Hostname(); err == nil {
			c.Node = strings.ToLower(strings.SplitN(h, ".", 2)[0])
		}
	}
	if c.Peers == nil {
		c.Peers = map[string]string{}
	}
	return &c
}

// Load returns the defaults overlaid with the file at path. An empty path means
// DefaultPath if that file exists, and the defaults alone otherwise. The result is not
// validated: apply overrides, then call Validate.
func Load(path string) (*Config, error) {
	c := Default()
	if path == "" {
		if _, err := os.Stat(DefaultPath); err != nil {
			return c, nil
		}
		path = DefaultPath
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	if err := Parse(b, c); err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrInvalid, path, err)
	}
	return c, nil
}

// Parse overlays YAML document b onto c. Unknown keys are errors: a typo must not
// silently fall back to a default.
func Parse(b []byte, c *Config) error {
	if err := yaml.UnmarshalStrict(b, c); err != nil {
		// sigs.k8s.io/yaml errors are multi-line; keep one line.
		return errors.New(strings.Join(strings.Fields(err.Error()), " "))
	}
	if c.Peers == nil {
		c.Peers = map[string]string{}
	}
	return nil
}

var nameRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9.-]{0,61}[a-z0-9])?$`)

// ValidName reports whether s is usable as a node name (a lower-case DNS name, as it
// appears in certificates).
func ValidName(s string) bool { return nameRE.MatchString(s) }

// Validate checks c and fills the TLS paths from TLS.Dir.
func (c *Config) Validate() error {
	var errs []string
	add := func(format string, a ...any) { errs = append(errs, fmt.Sprintf(format, a...)) }
	if !ValidName(c.Node) {
		add("node %q is not a valid node name (lower-case letters, digits, '-' and '.')", c.Node)
	}
	if !filepath.IsAbs(c.DataDir) {
		add("dataDir %q must be an absolute path", c.DataDir)
	}
	// A path, never an abstract socket: abstract sockets are reachable from any process in
	// the host network namespace whatever its mount namespace (CVE-2020-15257).
	if !filepath.IsAbs(c.ControlSocket) {
		add("controlSocket %q must be an absolute path", c.ControlSocket)
	} else if len(c.ControlSocket) > 107 {
		add("controlSocket %q is longer than a unix socket path may be", c.ControlSocket)
	}
	if c.StopTimeout < 0 {
		add("stopTimeout must not be negative")
	}
	if c.Logs.MaxFileBytes < 4096 {
		add("logs.maxFileBytes must be at least 4096")
	}
	if c.Logs.MaxFiles < 1 {
		add("logs.maxFiles must be at least 1")
	}
	if c.TLS.Dir != "" {
		if c.TLS.CA == "" {
			c.TLS.CA = filepath.Join(c.TLS.Dir, "ca.pem")
		}
		if c.TLS.Cert == "" {
			c.TLS.Cert = filepath.Join(c.TLS.Dir, c.Node+".pem")
		}
		if c.TLS.Key == "" {
			c.TLS.Key = filepath.Join(c.TLS.Dir, c.Node+"-key.pem")
		}
	}
	hasTLS := c.TLS.CA != "" && c.TLS.Cert != "" && c.TLS.Key != ""
	if (c.TLS.CA != "" || c.TLS.Cert != "" || c.TLS.Key != "") && !hasTLS {
		add("tls needs ca, cert and key (or dir)")
	}
	if c.Peer.Listen != "" {
		if _, _, err := net.SplitHostPort(c.Peer.Listen); err != nil {
			add("peer.listen %q: %v", c.Peer.Listen, err)
		}
		if !hasTLS {
			add("peer.listen needs tls: peers talk mutual TLS only")
		}
	}
	if c.Network.Bridge != "" && (len(c.Network.Bridge) > 15 || strings.ContainsAny(c.Network.Bridge, "/ \t")) {
		add("network.bridge %q is not an interface name", c.Network.Bridge)
	}
	if c.Network.Gateway != "" {
		if ip := net.ParseIP(c.Network.Gateway); ip == nil || ip.To4() == nil {
			add("network.gateway %q is not an IPv4 address", c.Network.Gateway)
		} else if c.Network.Bridge == "" {
			add("network.gateway needs network.bridge")
		}
	}
	if len(c.Peers) > 0 && !hasTLS {
		add("peers need tls: peers talk mutual TLS only")
	}
	names := make([]string, 0, len(c.Peers))
	for n := range c.Peers {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		if !ValidName(n) {
			add("peer name %q is not a valid node name", n)
		}
		if n == c.Node {
			add("peer %q is this node", n)
		}
		if _, _, err := net.SplitHostPort(c.Peers[n]); err != nil {
			add("peer %s address %q: %v", n, c.Peers[n], err)
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("%w: %s", ErrInvalid, strings.Join(errs, "; "))
	}
	return nil
}

// HasTLS reports whether TLS material is configured (after Validate).
func (c *Config) HasTLS() bool { return c.TLS.CA != "" && c.TLS.Cert != "" && c.TLS.Key != "" }

// Paths under DataDir.

// ContainersDir holds one directory per container (shim socket, state, logs).
func (c *Config) ContainersDir() string { return filepath.Join(c.DataDir, "containers") }

// CheckpointsDir holds one directory per checkpoint (manifest, CRIU images, logs).
func (c *Config) CheckpointsDir() string { return filepath.Join(c.DataDir, "checkpoints") }

// BasesDir holds the read-only rootfs bases containers are layered on.
func (c *Config) BasesDir() string { return filepath.Join(c.DataDir, "bases") }

// NetNSDir holds the bind-mounted network namespaces of containers with an address.
func (c *Config) NetNSDir() string { return filepath.Join(c.DataDir, "netns") }

// RuntimeDir is the OCI runtime's state root.
func (c *Config) RuntimeDir() string { return filepath.Join(c.DataDir, "runtime") }
