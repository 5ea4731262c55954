package network

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// CRIU locks a network namespace while it dumps or restores TCP connections:
// with nftables it adds a table "inet CRIU-<run id>", with iptables a chain
// "CRIU" in the filter tables jumped to from INPUT and OUTPUT (on this system's
// iptables-nft, a chain of the "ip"/"ip6" filter tables). Both are seen here
// through nftables' netlink interface.

// criuChain is the iptables backend's chain name.
const criuChain = "CRIU"

// isCRIUTable reports whether t is a table of CRIU's nftables backend.
func isCRIUTable(t *nftables.Table) bool { return strings.HasPrefix(t.Name, "CRIU-") }

func nftConn(nsPath string) (*nftables.Conn, func(), error) {
	f, err := os.OpenFile(nsPath, os.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, nil, err
	}
	c, err := nftables.New(nftables.WithNetNSFd(int(f.Fd())))
	if err != nil {
		f.Close()
		return nil, nil, err
	}
	return c, func() { f.Close() }, nil
}

// LockRules lists CRIU's network lock tables and chains in the namespace at
// nsPath ("/proc/self/ns/net" for the agent's own), as "table inet CRIU-x"
// or "chain ip filter CRIU".
func LockRules(nsPath string) ([]string, error) {
	c, done, err := nftConn(nsPath)
	if err != nil {
		return nil, fmt.Errorf("lock rules in %s: %w", nsPath, err)
	}
	defer done()
	var out []string
	tables, err := c.ListTables()
	if err != nil {
		return nil, fmt.Errorf("lock rules in %s: %w", nsPath, err)
	}
	for _, t := range tables {
		if isCRIUTable(t) {
			out = append(out, "table "+familyName(t.Family)+" "+t.Name)
		}
	}
	chains, err := c.ListChains()
	if err != nil {
		return nil, fmt.Errorf("lock rules in %s: %w", nsPath, err)
	}
	for _, ch := range chains {
		if ch.Name == criuChain && !isCRIUTable(ch.Table) {
			out = append(out, "chain "+familyName(ch.Table.Family)+" "+ch.Table.Name+" "+ch.Name)
		}
	}
	return out, nil
}

// RemoveLockRules deletes what LockRules finds: CRIU's tables, and its chain
// with the rules jumping to it. It returns what it removed. Only for a
// namespace no CRIU is working on (a container's, between operations).
func RemoveLockRules(nsPath string) ([]string, error) {
	found, err := LockRules(nsPath)
	if err != nil || len(found) == 0 {
		return nil, err
	}
	c, done, err := nftConn(nsPath)
	if err != nil {
		return nil, fmt.Errorf("remove lock rules in %s: %w", nsPath, err)
	}
	defer done()
	tables, err := c.ListTables()
	if err != nil {
		return nil, fmt.Errorf("remove lock rules in %s: %w", nsPath, err)
	}
	for _, t := range tables {
		if isCRIUTable(t) {
			c.DelTable(t)
		}
	}
	chains, err := c.ListChains()
	if err != nil {
		return nil, fmt.Errorf("remove lock rules in %s: %w", nsPath, err)
	}
	var errs []error
	for _, ch := range chains {
		if ch.Name != criuChain || isCRIUTable(ch.Table) {
			continue
		}
		// Rules jumping to the chain first, or it cannot go.
		for _, other := range chains {
			if other.Table.Name != ch.Table.Name || other.Table.Family != ch.Table.Family || other.Name == criuChain {
				continue
			}
			rules, err := c.GetRules(other.Table, other)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			for _, r := range rules {
				if jumpsTo(r, criuChain) {
					if err := c.DelRule(r); err != nil {
						errs = append(errs, err)
					}
				}
			}
		}
		c.FlushChain(ch)
		c.DelChain(ch)
	}
	if err := c.Flush(); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("remove lock rules in %s: %w", nsPath, err)
	}
	return found, nil
}

func jumpsTo(r *nftables.Rule, chain string) bool {
	for _, e := range r.Exprs {
		if v, ok := e.(*expr.Verdict); ok && (v.Kind == expr.VerdictJump || v.Kind == expr.VerdictGoto) && v.Chain == chain {
			return true
		}
	}
	return false
}

func familyName(f nftables.TableFamily) string {
	switch f {
	case nftables.TableFamilyINet:
		return "inet"
	case nftables.TableFamilyIPv4:
		return "ip"
	case nftables.TableFamilyIPv6:
		return "ip6"
	case nftables.TableFamilyARP:
		return "arp"
	case nftables.TableFamilyBridge:
		return "bridge"
	case nftables.TableFamilyNetdev:
		return "netdev"
	}
	return fmt.Sprintf("family%d", f)
}
