package criu

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/checkpoint-restore/go-criu/v8/rpc"
	"golang.org/x/sys/unix"
)

// Features is what this host's CRIU and kernel can do.
type Features struct {
	// LazyPages: CRIU can restore with lazy pages (post-copy): userfaultfd with
	// non-cooperative events.
	LazyPages bool
	// MemTrack: soft-dirty memory tracking, needed for incremental pre-dumps.
	MemTrack bool
	// PidfdStore: CRIU can keep pidfds between pre-dumps to detect pid reuse.
	PidfdStore bool
	// TimeNS: the kernel has time namespaces.
	TimeNS bool
	// Userfaultfd: this process can create a userfaultfd.
	Userfaultfd bool
	// NetworkLock is the network lock backend to use: NetworkLockNFTables
	// when CRIU and the kernel support it, else NetworkLockIPTables when
	// iptables-restore is installed, else "".
	NetworkLock string
	// NFTablesLock: CRIU was built with libnftables and the kernel supports
	// the set concatenations its lock needs.
	NFTablesLock bool
	// IPTablesRestore and NFT are the paths of those programs, "" if absent.
	IPTablesRestore, NFT string
	// PipeMaxSize is fs.pipe-max-size in bytes (see EnsurePipeMaxSize).
	PipeMaxSize int
}

// Features asks CRIU which optional features work here (RPC FEATURE_CHECK
// plus `criu check --feature network_lock_nftables`) and probes the host.
func (c *Client) Features(ctx context.Context) (*Features, error) {
	resp, err := c.do(ctx, call{op: "feature-check", req: &rpc.CriuReq{
		Type: rpc.CriuReqType_FEATURE_CHECK.Enum(),
		Features: &rpc.CriuFeatures{
			MemTrack:   ptr(true),
			LazyPages:  ptr(true),
			PidfdStore: ptr(true),
		},
	}})
	if err != nil {
		return nil, err
	}
	rf := resp.GetFeatures()
	f := &Features{
		LazyPages:       rf.GetLazyPages(),
		MemTrack:        rf.GetMemTrack(),
		PidfdStore:      rf.GetPidfdStore(),
		TimeNS:          exists("/proc/self/ns/time"),
		Userfaultfd:     probeUserfaultfd(),
		IPTablesRestore: findSbin("iptables-restore"),
		NFT:             findSbin("nft"),
	}
	if f.NFTablesLock, err = c.checkFeature(ctx, "network_lock_nftables"); err != nil {
		return nil, err
	}
	switch {
	case f.NFTablesLock:
		f.NetworkLock = NetworkLockNFTables
	case f.IPTablesRestore != "":
		f.NetworkLock = NetworkLockIPTables
	}
	if f.PipeMaxSize, err = PipeMaxSize(); err != nil {
		return nil, err
	}
	return f, nil
}

// checkFeature runs `criu check --feature name`, for features the RPC cannot
// query. CRIU exits 1 when the feature is missing.
func (c *Client) checkFeature(ctx context.Context, name string) (bool, error) {
	path := c.path()
	if err := checkBinary(path); err != nil {
		return false, err
	}
	cmd := exec.CommandContext(ctx, path, "check", "--feature", name)
	cmd.Dir = "/"
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return true, nil
	case errors.As(err, &ee) && ee.ExitCode() > 0 && !strings.Contains(string(out), "Unknown feature"):
		return false, nil
	default:
		return false, fmt.Errorf("criu check --feature %s: %w: %s", name, err, strings.TrimSpace(string(out)))
	}
}

// Check runs CRIU's self test (`criu check`, RPC CHECK). On failure the
// *Error quotes CRIU's reasons; its log is kept in a directory under
// os.TempDir() named in the error.
func (c *Client) Check(ctx context.Context) error {
	dir, err := os.MkdirTemp("", "criu-check-")
	if err != nil {
		return fmt.Errorf("criu check: %w", err)
	}
	d, err := openDir(dir)
	if err != nil {
		os.RemoveAll(dir)
		return fmt.Errorf("criu check: %w", err)
	}
	defer d.Close()
	opts, err := commonOpts(-1, int(d.Fd()), "check.log", 0, CgroupModeDefault, false, "", nil, nil)
	if err != nil {
		os.RemoveAll(dir)
		return fmt.Errorf("criu check: %w", err)
	}
	_, err = c.do(ctx, call{
		op:      "check",
		req:     &rpc.CriuReq{Type: rpc.CriuReqType_CHECK.Enum(), Opts: opts},
		logFile: filepath.Join(dir, "check.log"),
	})
	if err == nil {
		os.RemoveAll(dir)
	}
	return err
}

// LazyPagesPipeMaxSize is the fs.pipe-max-size lazy pages need. CRIU's page
// pipes grow to 4 MiB; when the kernel refuses the resize CRIU carries on and
// its splice later fails with EBADF, far from the cause.
const LazyPagesPipeMaxSize = 4 << 20

const pipeMaxSizePath = "/proc/sys/fs/pipe-max-size"

// PipeMaxSize returns fs.pipe-max-size.
func PipeMaxSize() (int, error) {
	b, err := os.ReadFile(pipeMaxSizePath)
	if err != nil {
		return 0, fmt.Errorf("read pipe-max-size: %w", err)
	}
	v, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return 0, fmt.Errorf("read pipe-max-size: %w", err)
	}
	return v, nil
}

// EnsurePipeMaxSize raises fs.pipe-max-size to at least min bytes (the kernel
// rounds it up to a power-of-two number of pages). It never lowers it. It
// returns whether it changed the value and the value before.
func EnsurePipeMaxSize(min int) (changed bool, old int, err error) {
	old, err = PipeMaxSize()
	if err != nil {
		return false, 0, err
	}
	if old >= min {
		return false, old, nil
	}
	if err := os.WriteFile(pipeMaxSizePath, []byte(strconv.Itoa(min)), 0); err != nil {
		return false, old, fmt.Errorf("raise pipe-max-size from %d to %d: %w", old, min, err)
	}
	return true, old, nil
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// findSbin looks for a system program in the standard directories only: the
// daemon's $PATH is not trusted to choose it.
func findSbin(name string) string {
	for _, dir := range []string{"/usr/local/sbin", "/usr/sbin", "/sbin", "/usr/local/bin", "/usr/bin", "/bin"} {
		p := filepath.Join(dir, name)
		if st, err := os.Stat(p); err == nil && !st.IsDir() && st.Mode().Perm()&0o111 != 0 {
			return p
		}
	}
	return ""
}

func probeUserfaultfd() bool {
	fd, _, errno := unix.Syscall(unix.SYS_USERFAULTFD, uintptr(unix.O_CLOEXEC|unix.O_NONBLOCK), 0, 0)
	if errno != 0 {
		return false
	}
	unix.Close(int(fd))
	return true
}
