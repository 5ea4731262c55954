package bench

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/migratehq/migrate/criu"
	"github.com/migratehq/migrate/test/testutil"
)

// moveSizes are the memwriter sizes BenchmarkMove moves, in MiB.
var moveSizes = []int{64, 256, 1024}

// moveSample is one move of a memwriter container. For the naive pipeline
// dump is `runc checkpoint`, transfer is tar | zstd over TCP until the
// receiver's tar exited, and total equals downtime (nothing happens outside
// the pause).
type moveSample struct {
	downtime, total, dump, transfer, restore time.Duration
	raw, wire                                int64 // bytes before and after compression
	baseSent                                 bool
	mode                                     string
}

// moveRuns keeps each size's samples across the framework's runs of one
// benchmark (it runs b.N=1 first, then the -benchtime count), so every run
// counts towards the medians.
var moveRuns = map[string]*struct{ ours, naive []moveSample }{}

// BenchmarkMove moves a memwriter container of 64, 256 and 1024 MiB between
// two agents on loopback (`migratectl move`, in MOVE_BENCH_MODE when set,
// else in migratectl's default mode) and, in
// the same iteration, through the pipeline a user would script today with
// runc and the same CRIU: runc checkpoint, tar | zstd -1 -T2 over a TCP
// socket to zstd -d | tar -x, runc restore. Which of the two goes first
// alternates. Every restored container's memory is checked against the
// checksum it had before the move. Reported: medians of downtime, total and
// phases for each, and naive/ours ratios of the medians.
//
//	go test -run '^$' -bench Move -benchtime 3x ./test/bench/
//
// With MOVE_BENCH_TMPFS=1 the agents' data directories and the naive
// pipeline's image directories are on a tmpfs instead of os.TempDir's
// filesystem.
func BenchmarkMove(b *testing.B) {
	setup(b)
	base := ""
	if os.Getenv("MOVE_BENCH_TMPFS") != "" {
		base = tmpfs(b)
	}
	n1, n2 := agentPair(b, base)
	// Where a host backs guest memory lazily, the first touch of each page is
	// slow once: pay that before measuring, for both pipelines alike. (On the
	// VM of docs/performance.md every fault is slow, so it changes little.)
	warmUp(b, 2*moveSizes[len(moveSizes)-1]<<20)
	// A first move sends the rootfs base, which n2 then keeps: measured moves
	// send the checkpoint only, as between nodes that run the same image.
	m := agentMove(b, n1, n2, memwriterBundle(b, 16), 16)
	if !m.baseSent {
		b.Fatal("the first move did not send the rootfs base")
	}
	b.Logf("move mode %q", m.mode)
	for _, mib := range moveSizes {
		b.Run(fmt.Sprintf("%dMiB", mib), func(b *testing.B) {
			work, err := os.MkdirTemp(base, "naive")
			if err != nil {
				b.Fatal(err)
			}
			defer os.RemoveAll(work)
			if err := os.Chmod(work, 0o755); err != nil {
				b.Fatal(err)
			}
			ours, naive := memwriterBundle(b, mib), memwriterBundle(b, mib)
			s := moveRuns[b.Name()]
			if s == nil {
				s = &struct{ ours, naive []moveSample }{}
				moveRuns[b.Name()] = s
			}
			for i := 0; i < b.N; i++ {
				if len(s.ours)%2 == 0 {
					s.ours = append(s.ours, agentMove(b, n1, n2, ours, mib))
					s.naive = append(s.naive, naiveMove(b, naive, work, mib))
				} else {
					s.naive = append(s.naive, naiveMove(b, naive, work, mib))
					s.ours = append(s.ours, agentMove(b, n1, n2, ours, mib))
				}
				if s.ours[len(s.ours)-1].baseSent {
					b.Fatal("a measured move sent the rootfs base again")
				}
			}
			reportMoves(b, s.ours, s.naive)
		})
	}
}

func memwriterBundle(b *testing.B, mib int) string {
	return testutil.NewBusyboxBundleWith(b, func(s *specs.Spec) {
		s.Process.Args = []string{"/usr/local/bin/memwriter", "-mib", strconv.Itoa(mib)}
		s.Linux.Resources = nil
	})
}

func reportMoves(b *testing.B, ours, naive []moveSample) {
	pick := func(ss []moveSample, f func(moveSample) time.Duration) time.Duration {
		ds := make([]time.Duration, len(ss))
		for i, s := range ss {
			ds[i] = f(s)
		}
		return median(ds)
	}
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	phases := []struct {
		name string
		f    func(moveSample) time.Duration
	}{
		{"downtime", func(s moveSample) time.Duration { return s.downtime }},
		{"total", func(s moveSample) time.Duration { return s.total }},
		{"dump", func(s moveSample) time.Duration { return s.dump }},
		{"transfer", func(s moveSample) time.Duration { return s.transfer }},
		{"restore", func(s moveSample) time.Duration { return s.restore }},
	}
	med := map[string]time.Duration{}
	for _, p := range phases {
		med["ours-"+p.name] = pick(ours, p.f)
		med["naive-"+p.name] = pick(naive, p.f)
		b.ReportMetric(ms(med["ours-"+p.name]), "ours-"+p.name+"-ms")
		if p.name != "total" {
			b.ReportMetric(ms(med["naive-"+p.name]), "naive-"+p.name+"-ms")
		}
	}
	b.ReportMetric(float64(med["naive-downtime"])/float64(med["ours-downtime"]), "downtime-naive/ours")
	b.ReportMetric(float64(med["naive-downtime"])/float64(med["ours-total"]), "total-naive/ours")
	last := func(ss []moveSample) moveSample { return ss[len(ss)-1] }
	mib := func(n int64) float64 { return float64(n) / (1 << 20) }
	b.ReportMetric(mib(last(ours).raw), "ours-raw-MiB")
	b.ReportMetric(mib(last(ours).wire), "ours-wire-MiB")
	b.ReportMetric(mib(last(naive).raw), "naive-raw-MiB")
	b.ReportMetric(mib(last(naive).wire), "naive-wire-MiB")
	b.ReportMetric(mib(last(ours).raw)/med["ours-transfer"].Seconds(), "ours-stream-MiB/s")
	b.ReportMetric(mib(last(naive).raw)/med["naive-transfer"].Seconds(), "naive-stream-MiB/s")
	b.ReportMetric(float64(len(ours)), "samples")
}

// agentMove runs a memwriter on n1, moves it to n2 and checks its memory there.
func agentMove(b *testing.B, n1, n2 *benchAgent, bundle string, mib int) moveSample {
	b.Helper()
	id := fmt.Sprintf("mv-%d-%d", mib, time.Now().UnixNano())
	n1.must(b, "run", "-b", bundle, id)
	sum := strings.TrimPrefix(n1.waitLine(b, id, 5*time.Minute, "ready "), "ready ")
	t0 := time.Now()
	m := n1.move(b, id, "n2")
	total := time.Since(t0)
	n2.must(b, "kill", "-s", "USR1", id)
	if got := n2.waitLine(b, id, 5*time.Minute, "ok ", "corrupt"); got != "ok "+sum {
		b.Fatalf("%s on n2 after the move: %q, want memory checksum %s", id, got, sum)
	}
	n2.must(b, "rm", "-f", id)
	raw, _ := strconv.ParseInt(m.RawBytes, 10, 64)
	wire, _ := strconv.ParseInt(m.WireBytes, 10, 64)
	return moveSample{
		downtime: parseDur(b, m.Downtime), total: total,
		dump: parseDur(b, m.Dump), transfer: parseDur(b, m.Transfer), restore: parseDur(b, m.Restore),
		raw: raw, wire: wire, baseSent: m.BaseSent, mode: m.Mode,
	}
}

// naiveMove is what a user scripts with runc and the same CRIU: checkpoint to
// a directory, tar | zstd -1 -T2 into a TCP socket, zstd -d | tar -x from it
// into a fresh directory, restore from that. Both ends are on this host; the
// bytes still cross a real loopback TCP connection.
func naiveMove(b *testing.B, bundle, work string, mib int) moveSample {
	b.Helper()
	id := fmt.Sprintf("naive-%d-%d", mib, time.Now().UnixNano())
	state := filepath.Join(work, "runc-state")
	runc := func(p *memProc, args ...string) {
		b.Helper()
		cmd := exec.Command("runc", append([]string{"--root", state, "--criu", criu.DefaultPath}, args...)...)
		var out strings.Builder
		cmd.Stdout, cmd.Stderr = &out, &out
		if p != nil {
			cmd.Stdin, cmd.Stdout, cmd.Stderr = p.files[0], p.files[1], p.files[2]
		}
		if err := cmd.Run(); err != nil {
			b.Fatalf("runc %s: %v: %s", strings.Join(args, " "), err, out.String())
		}
	}
	p := newMemProc(b)
	runc(p, "run", "--detach", "--bundle", bundle, id)
	defer exec.Command("runc", "--root", state, "delete", "--force", id).Run()
	sum := p.expect(b, "ready ")
	src, dst := filepath.Join(work, id+"-src"), filepath.Join(work, id+"-dst")
	defer os.RemoveAll(src)
	defer os.RemoveAll(dst)
	if err := os.Mkdir(dst, 0o700); err != nil {
		b.Fatal(err)
	}
	// The receiver listens before the move starts, as `nc -l` would.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	recv := make(chan recvResult, 1)
	go func() { recv <- receive(ln, dst) }()

	t0 := time.Now()
	runc(nil, "checkpoint", "--image-path", src, id)
	t1 := time.Now()
	if err := send(ln.Addr().String(), src); err != nil {
		b.Fatal(err)
	}
	r := <-recv
	if r.err != nil {
		b.Fatal(r.err)
	}
	t2 := time.Now()
	p2 := newMemProc(b)
	runc(p2, "restore", "--detach", "--image-path", dst, "--bundle", bundle, id)
	t3 := time.Now()
	p2.verify(b, sum)
	return moveSample{
		downtime: t3.Sub(t0), total: t3.Sub(t0),
		dump: t1.Sub(t0), transfer: t2.Sub(t1), restore: t3.Sub(t2),
		raw: dirSize(dst), wire: r.wire,
	}
}

// send runs tar | zstd -1 -T2 with its output on a TCP connection to addr.
func send(addr, dir string) error {
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		return err
	}
	f, err := conn.(*net.TCPConn).File()
	conn.Close()
	if err != nil {
		return err
	}
	cmd := exec.Command("bash", "-o", "pipefail", "-c", `tar -C "$0" -cf - . | zstd -q -1 -T2`, dir)
	cmd.Stdout = f
	var errb strings.Builder
	cmd.Stderr = &errb
	err = cmd.Start()
	// Only the pipeline may hold the socket, so its exit is the receiver's EOF.
	f.Close()
	if err == nil {
		err = cmd.Wait()
	}
	if err != nil {
		return fmt.Errorf("tar | zstd: %w: %s", err, errb.String())
	}
	return nil
}

type recvResult struct {
	wire int64
	err  error
}

// receive accepts one connection and runs zstd -d | tar -x on it into dir. It
// returns the bytes that came over the connection (TCP_INFO).
func receive(ln net.Listener, dir string) (r recvResult) {
	conn, err := ln.Accept()
	if err != nil {
		r.err = err
		return r
	}
	defer conn.Close()
	tc := conn.(*net.TCPConn)
	f, err := tc.File()
	if err != nil {
		r.err = err
		return r
	}
	cmd := exec.Command("bash", "-o", "pipefail", "-c", `zstd -q -d | tar -x -C "$0"`, dir)
	cmd.Stdin = f
	out, err := cmd.CombinedOutput()
	f.Close()
	if err != nil {
		r.err = fmt.Errorf("zstd -d | tar -x: %w: %s", err, out)
		return r
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		r.err = err
		return r
	}
	var info *unix.TCPInfo
	cerr := rc.Control(func(fd uintptr) { info, err = unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO) })
	if cerr != nil || err != nil {
		r.err = fmt.Errorf("TCP_INFO: %v %v", cerr, err)
		return r
	}
	r.wire = int64(info.Bytes_received)
	return r
}

// warmUp maps, touches and unmaps n bytes of anonymous memory.
func warmUp(b *testing.B, n int) {
	b.Helper()
	m, err := unix.Mmap(-1, 0, n, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		b.Fatalf("warm-up: %v", err)
	}
	for i := 0; i < len(m); i += os.Getpagesize() {
		m[i] = 1
	}
	if err := unix.Munmap(m); err != nil {
		b.Fatalf("warm-up: %v", err)
	}
}
