package transfer

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/binary"
	"io"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
)

// tlsPair is a throwaway self-signed certificate used as CA, server and client
// certificate, so tests run the real mutual-TLS path the agent uses.
var tlsPair = sync.OnceValues(func() (*tls.Config, *tls.Config) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		panic(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "transfer-test"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
		IPAddresses:           []net.IP{net.ParseIP("127.0.0.1")},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		panic(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		panic(err)
	}
	cert := tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}
	pool := x509.NewCertPool()
	pool.AddCert(leaf)
	srv := &tls.Config{Certificates: []tls.Certificate{cert}, ClientCAs: pool, ClientAuth: tls.RequireAndVerifyClientCert, MinVersion: tls.VersionTLS13}
	cli := &tls.Config{Certificates: []tls.Certificate{cert}, RootCAs: pool, MinVersion: tls.VersionTLS13}
	return srv, cli
})

// peer is a Receiver served over real gRPC on loopback TCP.
type peer struct {
	r    *Receiver
	srv  *grpc.Server
	conn *grpc.ClientConn
}

func startPeer(tb testing.TB, r *Receiver, useTLS bool) *peer {
	tb.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	srvCreds, cliCreds := insecure.NewCredentials(), insecure.NewCredentials()
	if useTLS {
		s, c := tlsPair()
		srvCreds, cliCreds = credentials.NewTLS(s), credentials.NewTLS(c)
	}
	p := &peer{r: r, srv: grpc.NewServer(grpc.Creds(srvCreds))}
	RegisterServer(p.srv, r)
	go p.srv.Serve(lis)
	p.conn, err = grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(cliCreds))
	if err != nil {
		p.srv.Stop()
		tb.Fatal(err)
	}
	tb.Cleanup(p.stop)
	return p
}

func (p *peer) stop() {
	p.conn.Close()
	p.srv.Stop()
}

// splitmix64 is the generator memwriter fills memory with.
func splitmix64(x *uint64) uint64 {
	*x += 0x9e3779b97f4a7c15
	z := *x
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return z ^ (z >> 31)
}

var words = []string{"alloc", "buffer", "context", "deadline", "error", "func", "goroutine", "handler",
	"index", "json", "key", "listen", "mutex", "nil", "object", "pointer", "queue", "request",
	"response", "string", "thread", "user", "value", "worker", "0x7f3a2c", "1024", "200 OK", "\n", "\t"}

// pageImage fills b like a CRIU pages image of a busy process: per 4 KiB page,
// 40% pseudo-random (memwriter's pattern, incompressible), 30% zero pages, 30%
// text and small integers (heap strings, structs).
func pageImage(b []byte, seed uint64) {
	const page = 4096
	x := seed
	for off := 0; off < len(b); off += page {
		p := b[off:min(off+page, len(b))]
		switch r := splitmix64(&x) % 10; {
		case r < 4:
			for i := 0; i+8 <= len(p); i += 8 {
				binary.LittleEndian.PutUint64(p[i:], splitmix64(&x))
			}
		case r < 7:
			clear(p)
		default:
			i := 0
			for i < len(p) {
				v := splitmix64(&x)
				if v%4 == 0 && i+8 <= len(p) {
					binary.LittleEndian.PutUint64(p[i:], v%4096) // small integers, pointers' low bits
					i += 8
					continue
				}
				i += copy(p[i:], words[v%uint64(len(words))])
			}
		}
	}
}

// checkpointDir writes a directory shaped like a checkpoint: one large pages
// image, small images, a rootfs diff, a manifest, an empty file and a file in a
// subdirectory. It returns the file names.
func checkpointDir(tb testing.TB, dir string, pagesSize int) []string {
	tb.Helper()
	files := map[string]int{
		"pages-1.img":      pagesSize,
		"pagemap-1.img":    5000,
		"core-1.img":       1800,
		"mm-1.img":         12345,
		"inventory.img":    60,
		"rootfs-diff.tar":  3<<20 + 17,
		"manifest.json":    900,
		"empty.img":        0,
		"extra/fdinfo.img": 300,
	}
	var names []string
	seed := uint64(1)
	for name, size := range files {
		seed++
		b := make([]byte, size)
		pageImage(b, seed)
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			tb.Fatal(err)
		}
		if err := os.WriteFile(p, b, 0o600); err != nil {
			tb.Fatal(err)
		}
		names = append(names, name)
	}
	return names
}

func fileSHA(tb testing.TB, path string) []byte {
	tb.Helper()
	f, err := os.Open(path)
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		tb.Fatal(err)
	}
	return h.Sum(nil)
}

// sameFiles fails unless every name has the same content in both directories.
func sameFiles(tb testing.TB, src, dst string, names []string) {
	tb.Helper()
	for _, n := range names {
		if a, b := fileSHA(tb, filepath.Join(src, n)), fileSHA(tb, filepath.Join(dst, n)); !bytes.Equal(a, b) {
			tb.Errorf("%s differs after transfer", n)
		}
	}
}

func totalSize(tb testing.TB, dir string, names []string) int64 {
	var n int64
	for _, name := range names {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			tb.Fatal(err)
		}
		n += fi.Size()
	}
	return n
}
