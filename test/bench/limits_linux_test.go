package bench

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"io"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"
	"golang.org/x/sys/unix"

	"github.com/migratehq/migrate/test/workloads/memcheck"
)

// BenchmarkLimits measures this machine's ceilings for the parts of a move,
// to read BenchmarkMove's figures against: loopback TCP and TLS throughput,
// zstd at the level the stream uses on memwriter's data (one and two cores,
// and the zstd CLI as the naive pipeline runs it), SHA-256, writing fresh
// versus already-touched memory (anonymous, tmpfs, page cache), and CRIU
// dump and restore (through runc) of the same memwriter sizes to a tmpfs.
//
//	go test -run '^$' -bench Limits -benchtime 3x ./test/bench/
func BenchmarkLimits(b *testing.B) {
	setup(b)
	const streamBytes = 1 << 30
	b.Run("loopback-tcp", func(b *testing.B) { benchLoopback(b, streamBytes, false) })
	b.Run("loopback-tls", func(b *testing.B) { benchLoopback(b, streamBytes, true) })

	data := memwriterData(b, 256<<20)
	b.Run("zstd-fastest-1core", func(b *testing.B) { benchZstd(b, data, 1) })
	b.Run("zstd-fastest-2cores", func(b *testing.B) { benchZstd(b, data, 2) })
	tmp := tmpfs(b)
	b.Run("zstd-cli-1-T2", func(b *testing.B) {
		f := filepath.Join(tmp, "data")
		if err := os.WriteFile(f, data, 0o600); err != nil {
			b.Fatal(err)
		}
		defer os.Remove(f)
		b.SetBytes(int64(len(data)))
		b.ResetTimer()
		for range b.N {
			if out, err := exec.Command("bash", "-c", `zstd -q -1 -T2 -c "$0" >/dev/null`, f).CombinedOutput(); err != nil {
				b.Fatalf("zstd: %v: %s", err, out)
			}
		}
	})
	b.Run("sha256", func(b *testing.B) {
		b.SetBytes(int64(len(data)))
		c0 := cpuTime(b)
		for range b.N {
			sha256.Sum256(data)
		}
		reportCPU(b, c0, int64(len(data))*int64(b.N))
	})

	const memBytes = 1 << 30
	// A rate, so a quarter of the size: fresh pages are slow to fault in here.
	b.Run("anon-first-touch", func(b *testing.B) { benchAnon(b, memBytes/4, false, false) })
	b.Run("anon-first-touch-thp", func(b *testing.B) { benchAnon(b, memBytes/4, false, true) })
	b.Run("anon-touched", func(b *testing.B) { benchAnon(b, memBytes/4, true, false) })
	b.Run("tmpfs-write-fresh", func(b *testing.B) { benchFileWrite(b, tmp, memBytes, false, 0) })
	b.Run("tmpfs-write-touched", func(b *testing.B) { benchFileWrite(b, tmp, memBytes, true, 0) })
	// The agents' data directories and the naive pipeline's images are on the
	// filesystem of os.TempDir: a dump writes into its page cache.
	b.Run("pagecache-write-fresh", func(b *testing.B) { benchFileWrite(b, b.TempDir(), memBytes, false, 0) })
	// The transfer's receiver makes what it wrote durable every 64 MiB.
	b.Run("disk-write-fdatasync-64MiB", func(b *testing.B) { benchFileWrite(b, b.TempDir(), memBytes, false, 64<<20) })

	for _, mib := range moveSizes {
		b.Run(fmt.Sprintf("criu-tmpfs/%dMiB", mib), func(b *testing.B) {
			var dumps, restores []time.Duration
			var size int64
			for range b.N {
				r := runcCR(b, mib, tmp)
				dumps, restores, size = append(dumps, r.dump), append(restores, r.restore), r.size
			}
			d, r := median(dumps), median(restores)
			b.ReportMetric(float64(d.Microseconds())/1000, "dump-ms")
			b.ReportMetric(float64(r.Microseconds())/1000, "restore-ms")
			b.ReportMetric(float64(size)/(1<<20)/d.Seconds(), "dump-MiB/s")
			b.ReportMetric(float64(size)/(1<<20)/r.Seconds(), "restore-MiB/s")
			b.ReportMetric(float64(size)/(1<<20), "image-MiB")
		})
	}
}

// memwriterData is n bytes of memwriter's page pattern: what a memwriter's
// pages image holds.
func memwriterData(b *testing.B, n int) []byte {
	data := make([]byte, n)
	for i := 0; i < n/memcheck.PageSize; i++ {
		memcheck.FillPage(data[i*memcheck.PageSize:(i+1)*memcheck.PageSize], 1, i, 0)
	}
	return data
}

// tmpfs mounts a private tmpfs for the benchmark's files. Its path is short:
// agents put unix sockets under it, whose paths are limited to 107 bytes.
func tmpfs(b *testing.B) string {
	b.Helper()
	dir, err := os.MkdirTemp("", "migt")
	if err != nil {
		b.Fatal(err)
	}
	if err := unix.Mount("tmpfs", dir, "tmpfs", 0, "size=8g,mode=0755"); err != nil {
		os.Remove(dir)
		b.Fatalf("mount tmpfs: %v", err)
	}
	b.Cleanup(func() {
		if err := unix.Unmount(dir, unix.MNT_DETACH); err != nil {
			b.Errorf("unmount %s: %v", dir, err)
			return
		}
		os.Remove(dir)
	})
	return dir
}

// benchLoopback sends n bytes per op from a Go client to a Go server over
// 127.0.0.1, in 1 MiB writes (the stream's chunk size), plain or TLS 1.3.
func benchLoopback(b *testing.B, n int, useTLS bool) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	var srvCfg, cliCfg *tls.Config
	if useTLS {
		srvCfg, cliCfg = selfSignedTLS(b)
	}
	buf := make([]byte, 1<<20)
	for i := range buf {
		buf[i] = byte(i * 7)
	}
	b.SetBytes(int64(n))
	b.ResetTimer()
	c0 := cpuTime(b)
	defer func() { reportCPU(b, c0, int64(n)*int64(b.N)) }()
	for range b.N {
		got := make(chan error, 1)
		go func() {
			c, err := ln.Accept()
			if err != nil {
				got <- err
				return
			}
			defer c.Close()
			if srvCfg != nil {
				c = tls.Server(c, srvCfg)
			}
			m, err := io.CopyBuffer(io.Discard, c, make([]byte, 1<<20))
			if err == nil && m != int64(n) {
				err = fmt.Errorf("received %d bytes, want %d", m, n)
			}
			got <- err
		}()
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			b.Fatal(err)
		}
		if cliCfg != nil {
			c = tls.Client(c, cliCfg)
		}
		for sent := 0; sent < n; sent += len(buf) {
			if _, err := c.Write(buf); err != nil {
				b.Fatal(err)
			}
		}
		c.Close()
		if err := <-got; err != nil {
			b.Fatal(err)
		}
	}
}

func selfSignedTLS(b *testing.B) (srv, cli *tls.Config) {
	b.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		b.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "bench"},
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		b.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		b.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	pair := tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
	return &tls.Config{Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS13},
		&tls.Config{RootCAs: pool, ServerName: "127.0.0.1", MinVersion: tls.VersionTLS13}
}

// benchZstd compresses data in 1 MiB chunks with EncodeAll at SpeedFastest, as
// the transfer does, on workers goroutines.
func benchZstd(b *testing.B, data []byte, workers int) {
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedFastest), zstd.WithEncoderConcurrency(workers), zstd.WithEncoderCRC(false))
	if err != nil {
		b.Fatal(err)
	}
	defer enc.Close()
	const chunk = 1 << 20
	var wire int64
	b.SetBytes(int64(len(data)))
	b.ResetTimer()
	c0 := cpuTime(b)
	for range b.N {
		var wg sync.WaitGroup
		var mu sync.Mutex
		wire = 0
		next := make(chan []byte)
		for range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				dst := make([]byte, 0, chunk+chunk/8)
				var n int64
				for c := range next {
					n += int64(len(enc.EncodeAll(c, dst[:0])))
				}
				mu.Lock()
				wire += n
				mu.Unlock()
			}()
		}
		for off := 0; off < len(data); off += chunk {
			next <- data[off : off+chunk]
		}
		close(next)
		wg.Wait()
	}
	reportCPU(b, c0, int64(len(data))*int64(b.N))
	b.ReportMetric(float64(wire)/float64(len(data)), "wire/raw")
}

// cpuTime is the user and system CPU time the process used so far.
func cpuTime(b *testing.B) time.Duration {
	var ru unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// reportCPU reports n bytes per CPU second used since c0: a steadier figure
// than wall-clock throughput on a shared machine.
func reportCPU(b *testing.B, c0 time.Duration, n int64) {
	if d := cpuTime(b) - c0; d > 0 {
		b.ReportMetric(float64(n)/1e6/d.Seconds(), "MB/cpu-s")
	}
}

// benchAnon maps n bytes and writes one byte per page: the cost of faulting
// fresh pages in, or, when touched, of writing pages that are already there.
// With thp the mapping asks for transparent huge pages (MADV_HUGEPAGE), so a
// fault brings in 2 MiB where the kernel can.
func benchAnon(b *testing.B, n int, touched, thp bool) {
	b.SetBytes(int64(n))
	page := os.Getpagesize()
	for range b.N {
		b.StopTimer()
		m, err := unix.Mmap(-1, 0, n, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
		if err != nil {
			b.Fatal(err)
		}
		if thp {
			if err := unix.Madvise(m, unix.MADV_HUGEPAGE); err != nil {
				b.Fatalf("madvise: %v", err)
			}
		}
		if touched {
			for i := 0; i < n; i += page {
				m[i] = 1
			}
		}
		b.StartTimer()
		for i := 0; i < n; i += page {
			m[i] = 2
		}
		b.StopTimer()
		if err := unix.Munmap(m); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
}

// benchFileWrite writes n bytes to a file in dir in 1 MiB writes: into fresh
// pages (a new file) or, when touched, over the pages of a file written
// before. With syncEvery > 0 it calls fdatasync after every syncEvery bytes
// and at the end; without, it never syncs.
func benchFileWrite(b *testing.B, dir string, n int, touched bool, syncEvery int) {
	buf := make([]byte, 1<<20)
	for i := range buf {
		buf[i] = byte(i * 13)
	}
	name := filepath.Join(dir, "write")
	write := func(syncEvery int) {
		f, err := os.OpenFile(name, os.O_WRONLY|os.O_CREATE, 0o600)
		if err != nil {
			b.Fatal(err)
		}
		for off := 0; off < n; off += len(buf) {
			if _, err := f.Write(buf); err != nil {
				b.Fatal(err)
			}
			if syncEvery > 0 && (off+len(buf))%syncEvery == 0 {
				if err := unix.Fdatasync(int(f.Fd())); err != nil {
					b.Fatal(err)
				}
			}
		}
		if err := f.Close(); err != nil {
			b.Fatal(err)
		}
	}
	defer os.Remove(name)
	b.SetBytes(int64(n))
	for range b.N {
		b.StopTimer()
		os.Remove(name)
		if touched {
			write(0)
		}
		b.StartTimer()
		write(syncEvery)
	}
}
