package network

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// The per-namespace sysctls compared with a fresh namespace's: those CRIU
// carries in its images when it dumps a namespace (criu/net.c: devconfs4 and
// devconfs6 of each device, here lo and the all/default sets, and
// unix/max_dgram_qlen, ipv4/ping_group_range). Restoring into a fresh
// namespace loses nothing CRIU would have restored when they are equal.
var (
	devconfs4 = []string{"accept_local", "accept_redirects", "accept_source_route", "arp_accept", "arp_announce",
		"arp_filter", "arp_ignore", "arp_notify", "bootp_relay", "disable_policy", "disable_xfrm", "force_igmp_version",
		"forwarding", "igmpv2_unsolicited_report_interval", "igmpv3_unsolicited_report_interval", "log_martians",
		"medium_id", "promote_secondaries", "proxy_arp", "proxy_arp_pvlan", "route_localnet", "rp_filter",
		"secure_redirects", "send_redirects", "shared_media", "src_valid_mark", "tag", "ignore_routes_with_linkdown",
		"drop_gratuitous_arp", "drop_unicast_in_l2_multicast"}
	devconfs6 = []string{"accept_dad", "accept_ra", "accept_ra_defrtr", "accept_ra_from_local", "accept_ra_min_hop_limit",
		"accept_ra_mtu", "accept_ra_pinfo", "accept_ra_rt_info_max_plen", "accept_ra_rtr_pref", "accept_redirects",
		"accept_source_route", "autoconf", "dad_transmits", "disable_ipv6", "drop_unicast_in_l2_multicast",
		"drop_unsolicited_na", "force_mld_version", "force_tllao", "forwarding", "hop_limit", "ignore_routes_with_linkdown",
		"keep_addr_on_down", "max_addresses", "max_desync_factor", "mldv1_unsolicited_report_interval",
		"mldv2_unsolicited_report_interval", "mtu", "ndisc_notify", "optimistic_dad", "proxy_ndp", "regen_max_retry",
		"router_probe_interval", "router_solicitation_delay", "router_solicitation_interval", "router_solicitations",
		"stable_secret", "suppress_frag_ndisc", "temp_prefered_lft", "temp_valid_lft", "use_oif_addrs_only",
		"use_optimistic", "use_tempaddr"}
	netSysctls = map[string][]string{"unix": {"max_dgram_qlen"}, "ipv4": {"ping_group_range"}}
)

func init() {
	for _, dev := range []string{"all", "default", "lo"} {
		netSysctls["ipv4/conf/"+dev] = devconfs4
		netSysctls["ipv6/conf/"+dev] = devconfs6
	}
}

// nsState is what a network namespace holds, in comparable form.
type nsState struct {
	links, addrs, routes, rules []string
	loUp                        bool
	sysctls                     map[string]string
}

// LoopbackOnly inspects the network namespace of process pid, which must
// not change meanwhile (its container is frozen), and reports whether it
// holds nothing a fresh namespace with the same loopback state would not: no
// other interface, no address, route or rule of its own, no firewall table,
// no changed sysctl. Such a namespace can be left out of a checkpoint and
// made anew at restore (NewLoopback), which spares CRIU's dump and restore of
// it with ip and iptables, ~0.1 s each. loUp is the loopback's state; why
// says what else the namespace holds. fresh, read ahead (FreshState), is what
// it is compared with if its loopback state is the namespace's; else a fresh
// namespace is made and read here.
func LoopbackOnly(pid int, fresh *Fresh) (loUp bool, why string, err error) {
	nsPath := fmt.Sprintf("/proc/%d/ns/net", pid)
	ns, err := netns.GetFromPath(nsPath)
	if err != nil {
		return false, "", fmt.Errorf("netns of %d: %w", pid, err)
	}
	defer ns.Close()
	var st nsState
	if err := inNetNS(nsPath, func() error { return st.read(ns) }); err != nil {
		return false, "", fmt.Errorf("netns of %d: %w", pid, err)
	}
	if why := st.extraLinks(); why != "" {
		return st.loUp, why, nil
	}
	for _, f := range []string{"ip_tables_names", "ip6_tables_names", "arp_tables_names"} {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/net/%s", pid, f))
		if err == nil && len(bytes.TrimSpace(b)) > 0 {
			return st.loUp, "legacy iptables tables: " + strings.Join(strings.Fields(string(b)), " "), nil
		}
	}
	if why, err := nftTables(nsPath); err != nil || why != "" {
		return st.loUp, why, err
	}
	if fresh == nil || fresh.loUp != st.loUp {
		if fresh, err = FreshState(st.loUp); err != nil {
			return false, "", err
		}
	}
	return st.loUp, st.diff(&fresh.st), nil
}

// Fresh is what a fresh network namespace holds (FreshState).
type Fresh struct {
	loUp bool
	st   nsState
}

// FreshState makes a fresh namespace with its loopback up or down, reads it
// for LoopbackOnly and lets it go: ~5 ms, best spent before the container
// is frozen.
func FreshState(loUp bool) (*Fresh, error) {
	f := &Fresh{loUp: loUp}
	if err := inFreshNetNS(loUp, func(ns netns.NsHandle) error { return f.st.read(ns) }); err != nil {
		return nil, fmt.Errorf("fresh network namespace: %w", err)
	}
	return f, nil
}

// NewLoopback makes a fresh network namespace with its loopback up or down
// and returns it open: it lives while the file is open or a process is in it.
func NewLoopback(up bool) (*os.File, error) {
	var f *os.File
	err := inFreshNetNS(up, func(netns.NsHandle) error {
		var err error
		f, err = os.OpenFile(fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid()), os.O_RDONLY|unix.O_CLOEXEC, 0)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("fresh network namespace: %w", err)
	}
	return f, nil
}

func loopbackUp(ns netns.NsHandle) error {
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		return err
	}
	defer h.Close()
	return linkUp(h, "lo")
}

// linkUp sets the link called name up.
func linkUp(h *netlink.Handle, name string) error {
	l, err := h.LinkByName(name)
	if err != nil {
		return err
	}
	if err := h.LinkSetUp(l); err != nil {
		return fmt.Errorf("%s up: %w", name, err)
	}
	return nil
}

// read fills s from ns; it runs on a thread inside ns, where /proc/sys/net
// shows ns's settings.
func (s *nsState) read(ns netns.NsHandle) error {
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		return err
	}
	defer h.Close()
	links, err := h.LinkList()
	if err != nil {
		return fmt.Errorf("links: %w", err)
	}
	for _, l := range links {
		a := l.Attrs()
		s.links = append(s.links, a.Name+" "+l.Type())
		if a.Name == "lo" {
			s.loUp = a.Flags&net.FlagUp != 0
		}
	}
	addrs, err := h.AddrList(nil, netlink.FAMILY_ALL)
	if err != nil {
		return fmt.Errorf("addresses: %w", err)
	}
	for _, a := range addrs {
		s.addrs = append(s.addrs, fmt.Sprintf("%d %s", a.LinkIndex, a.IPNet))
	}
	routes, err := h.RouteListFiltered(netlink.FAMILY_ALL, &netlink.Route{Table: unix.RT_TABLE_UNSPEC}, netlink.RT_FILTER_TABLE)
	if err != nil {
		return fmt.Errorf("routes: %w", err)
	}
	for _, r := range routes {
		s.routes = append(s.routes, fmt.Sprintf("table %d type %d dst %v src %v gw %v dev %d proto %d scope %d prio %d", r.Table, r.Type, r.Dst, r.Src, r.Gw, r.LinkIndex, r.Protocol, r.Scope, r.Priority))
	}
	rules, err := h.RuleList(netlink.FAMILY_ALL)
	if err != nil {
		return fmt.Errorf("rules: %w", err)
	}
	for _, r := range rules {
		s.rules = append(s.rules, fmt.Sprintf("family %d prio %d table %d src %v dst %v mark %d iif %q oif %q type %d", r.Family, r.Priority, r.Table, r.Src, r.Dst, r.Mark, r.IifName, r.OifName, r.Type))
	}
	for _, l := range [][]string{s.links, s.addrs, s.routes, s.rules} {
		slices.Sort(l)
	}
	s.sysctls = readSysctls()
	return nil
}

// readSysctls reads netSysctls as the calling thread's namespace has them.
// Lean syscalls: ~1 ms for the ~220 files, where os.ReadFile takes ~10.
func readSysctls() map[string]string {
	out := map[string]string{}
	buf := make([]byte, 256)
	for dir, names := range netSysctls {
		d, err := unix.Open(filepath.Join("/proc/sys/net", dir), unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			continue // e.g. no IPv6: alike on both sides
		}
		for _, name := range names {
			v := "unreadable" // missing, or EIO (stable_secret unset): alike on both sides
			if fd, err := unix.Openat(d, name, unix.O_RDONLY|unix.O_CLOEXEC, 0); err == nil {
				if n, err := unix.Read(fd, buf); err == nil {
					v = string(bytes.TrimSpace(buf[:n]))
				}
				unix.Close(fd)
			}
			out[dir+"/"+name] = v
		}
		unix.Close(d)
	}
	return out
}

// extraLinks says which interface besides lo the namespace has.
func (s *nsState) extraLinks() string {
	for _, l := range s.links {
		if !strings.HasPrefix(l, "lo ") {
			return "interface " + l
		}
	}
	return ""
}

// diff says the first way s differs from ref, "" when it does not.
func (s *nsState) diff(ref *nsState) string {
	for _, c := range []struct {
		what     string
		got, ref []string
	}{{"interfaces", s.links, ref.links}, {"addresses", s.addrs, ref.addrs}, {"routes", s.routes, ref.routes}, {"rules", s.rules, ref.rules}} {
		if !slices.Equal(c.got, c.ref) {
			return fmt.Sprintf("%s %v (a fresh namespace has %v)", c.what, c.got, c.ref)
		}
	}
	keys := make([]string, 0, len(s.sysctls))
	for k := range s.sysctls {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		if v, ok := ref.sysctls[k]; !ok || v != s.sysctls[k] {
			return fmt.Sprintf("sysctl net/%s is %q (a fresh namespace has %q)", k, s.sysctls[k], v)
		}
	}
	for k := range ref.sysctls {
		if _, ok := s.sysctls[k]; !ok {
			return "sysctl net/" + k + " missing"
		}
	}
	return ""
}

// nftTables names the nftables tables in the namespace at nsPath other than
// CRIU's network lock (which a restore removes), "" when there are none.
func nftTables(nsPath string) (string, error) {
	c, done, err := nftConn(nsPath)
	if err != nil {
		return "", fmt.Errorf("nftables in %s: %w", nsPath, err)
	}
	defer done()
	ts, err := c.ListTables()
	if err != nil {
		if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.EPROTONOSUPPORT) {
			return "", nil // no nf_tables
		}
		return "", fmt.Errorf("nftables in %s: %w", nsPath, err)
	}
	var names []string
	for _, t := range ts {
		if !isCRIUTable(t) {
			names = append(names, familyName(t.Family)+" "+t.Name)
		}
	}
	if len(names) == 0 {
		return "", nil
	}
	return "nftables tables: " + strings.Join(names, ", "), nil
}
