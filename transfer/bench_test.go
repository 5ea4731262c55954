package transfer

import (
	"time"

	"crypto/sha256"
	"crypto/tls"
	"fmt"
	"golang.org/x/sys/unix"
	"hash/crc32"
	"io"
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/klauspost/compress/zstd"
)

// The benchmarks share one 256 MiB page image so the stream, the raw loopback
// and zstd alone are measured on the same bytes in the same run:
//
//	go test -run '^$' -bench . -benchtime 3x ./transfer/
const benchSize = 256 << 20

var benchData = sync.OnceValue(func() []byte {
	b := make([]byte, benchSize)
	pageImage(b, 42)
	return b
})

// BenchmarkStream is Send of one 256 MiB pages image plus nothing else, sender
// and receiver in this process over loopback gRPC, the receiver writing to disk.
func BenchmarkStream(b *testing.B) {
	src := b.TempDir()
	if err := os.WriteFile(filepath.Join(src, "pages-1.img"), benchData(), 0o600); err != nil {
		b.Fatal(err)
	}
	known := map[string]string{"pages-1.img": fmt.Sprintf("%x", sha256.Sum256(benchData()))}
	for _, c := range []struct {
		name string
		tls  bool
		o    SendOptions
	}{
		{"tls", true, SendOptions{}},
		{"tls/known-digest", true, SendOptions{SHA256: known}},
		{"insecure", false, SendOptions{}},
		{"tls/level=default", true, SendOptions{Level: zstd.SpeedDefault}},
		{"tls/uncompressed", true, SendOptions{NoCompression: true}},
		{"tls/workers=1", true, SendOptions{Workers: 1}},
		{"tls/chunk=256k", true, SendOptions{ChunkSize: 256 << 10}},
	} {
		b.Run(c.name, func(b *testing.B) {
			r := &Receiver{Root: b.TempDir()}
			p := startPeer(b, r, c.tls)
			var wire, n int64
			b.SetBytes(benchSize)
			cpu := startCPU()
			for i := 0; b.Loop(); i++ {
				id := fmt.Sprintf("bench-%d", i)
				st, err := Send(b.Context(), p.conn, id, src, []string{"pages-1.img"}, c.o)
				if err != nil {
					b.Fatal(err)
				}
				wire, n = wire+st.WireBytes, n+1
				b.StopTimer()
				if err := r.Remove(id); err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
			}
			cpu.report(b, int64(b.N)*benchSize)
			b.ReportMetric(float64(wire)/float64(n*benchSize), "wire/raw")
		})
	}
}

// BenchmarkLoopback is the raw TCP (and TLS 1.3) throughput of loopback on
// this machine: the ceiling for BenchmarkStream.
func BenchmarkLoopback(b *testing.B) {
	for _, useTLS := range []bool{false, true} {
		b.Run(map[bool]string{false: "tcp", true: "tls"}[useTLS], func(b *testing.B) {
			lis, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				b.Fatal(err)
			}
			defer lis.Close()
			srvConf, cliConf := tlsPair()
			done := make(chan error, 1)
			go func() {
				c, err := lis.Accept()
				if err != nil {
					done <- err
					return
				}
				defer c.Close()
				if useTLS {
					c = tls.Server(c, srvConf)
				}
				_, err = io.Copy(io.Discard, c)
				done <- err
			}()
			conn, err := net.Dial("tcp", lis.Addr().String())
			if err != nil {
				b.Fatal(err)
			}
			if useTLS {
				conf := cliConf.Clone()
				conf.ServerName = "127.0.0.1"
				conn = tls.Client(conn, conf)
			}
			data := benchData()
			b.SetBytes(benchSize)
			cpu := startCPU()
			for b.Loop() {
				for off := 0; off < len(data); off += DefaultChunkSize {
					if _, err := conn.Write(data[off : off+DefaultChunkSize]); err != nil {
						b.Fatal(err)
					}
				}
			}
			cpu.report(b, int64(b.N)*benchSize)
			conn.Close()
			if err := <-done; err != nil {
				b.Fatal(err)
			}
		})
	}
}

// BenchmarkZstd compresses the page image alone: 1 MiB chunks with EncodeAll
// from 1 or 2 goroutines (what Send does), and the streaming encoder with its
// own concurrency, at the fastest and default levels.
func BenchmarkZstd(b *testing.B) {
	data := benchData()
	for _, level := range []zstd.EncoderLevel{zstd.SpeedFastest, zstd.SpeedDefault} {
		for _, workers := range []int{1, 2} {
			b.Run(fmt.Sprintf("%s/chunks/workers=%d", level, workers), func(b *testing.B) {
				enc, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(level), zstd.WithEncoderConcurrency(workers), zstd.WithEncoderCRC(false))
				if err != nil {
					b.Fatal(err)
				}
				defer enc.Close()
				var out atomic.Int64
				b.SetBytes(benchSize)
				cpu := startCPU()
				for b.Loop() {
					var next atomic.Int64
					var wg sync.WaitGroup
					for range workers {
						wg.Go(func() {
							dst := make([]byte, 0, DefaultChunkSize)
							for {
								off := int(next.Add(DefaultChunkSize)) - DefaultChunkSize
								if off >= len(data) {
									return
								}
								dst = enc.EncodeAll(data[off:off+DefaultChunkSize], dst[:0])
								out.Add(int64(len(dst)))
							}
						})
					}
					wg.Wait()
				}
				cpu.report(b, int64(b.N)*benchSize)
				b.ReportMetric(float64(out.Load())/float64(int64(b.N)*benchSize), "wire/raw")
			})
			b.Run(fmt.Sprintf("%s/stream/concurrency=%d", level, workers), func(b *testing.B) {
				var cw countWriter
				enc, err := zstd.NewWriter(&cw, zstd.WithEncoderLevel(level), zstd.WithEncoderConcurrency(workers))
				if err != nil {
					b.Fatal(err)
				}
				b.SetBytes(benchSize)
				cpu := startCPU()
				for b.Loop() {
					enc.Reset(&cw)
					if _, err := enc.Write(data); err != nil {
						b.Fatal(err)
					}
					if err := enc.Close(); err != nil {
						b.Fatal(err)
					}
				}
				cpu.report(b, int64(b.N)*benchSize)
				b.ReportMetric(float64(cw.n)/float64(int64(b.N)*benchSize), "wire/raw")
			})
		}
	}
	b.Run("decode/chunks/workers=1", func(b *testing.B) {
		enc, _ := zstd.NewWriter(nil, zstd.WithEncoderLevel(DefaultLevel), zstd.WithEncoderCRC(false))
		var frames [][]byte
		for off := 0; off < len(data); off += DefaultChunkSize {
			frames = append(frames, enc.EncodeAll(data[off:off+DefaultChunkSize], nil))
		}
		dec, err := zstd.NewReader(nil, zstd.WithDecoderConcurrency(1))
		if err != nil {
			b.Fatal(err)
		}
		defer dec.Close()
		dst := make([]byte, 0, DefaultChunkSize)
		b.SetBytes(benchSize)
		cpu := startCPU()
		for b.Loop() {
			for _, f := range frames {
				if dst, err = dec.DecodeAll(f, dst[:0]); err != nil {
					b.Fatal(err)
				}
			}
		}
		cpu.report(b, int64(b.N)*benchSize)
	})
}

// cpuMeter reports, next to wall-clock throughput, the throughput per CPU
// second of the whole process: on a loaded machine the wall clock measures the
// neighbours, the CPU time much less so.
type cpuMeter struct{ start time.Duration }

func cpuTime() time.Duration {
	var ru unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func startCPU() cpuMeter { return cpuMeter{start: cpuTime()} }

func (m cpuMeter) report(b *testing.B, bytes int64) {
	if d := cpuTime() - m.start; d > 0 {
		b.ReportMetric(float64(bytes)/d.Seconds()/1e6, "MB/cpu-s")
	}
}

type countWriter struct{ n int64 }

func (c *countWriter) Write(p []byte) (int, error) { c.n += int64(len(p)); return len(p), nil }

// BenchmarkChecksum compares the per-chunk checksum with the whole-file digest.
func BenchmarkChecksum(b *testing.B) {
	data := benchData()
	b.Run("crc32c", func(b *testing.B) {
		b.SetBytes(benchSize)
		cpu := startCPU()
		for b.Loop() {
			crc32.Checksum(data, castagnoli)
		}
		cpu.report(b, int64(b.N)*benchSize)
	})
	b.Run("sha256", func(b *testing.B) {
		b.SetBytes(benchSize)
		cpu := startCPU()
		for b.Loop() {
			sha256.Sum256(data)
		}
		cpu.report(b, int64(b.N)*benchSize)
	})
}
