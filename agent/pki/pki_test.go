package pki

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func files(dir, name string) Files {
	return Files{CA: filepath.Join(dir, CAFile), Cert: CertFile(dir, name), Key: KeyFile(dir, name)}
}

func TestInitCluster(t *testing.T) {
	dir := t.TempDir()
	res, err := InitCluster(dir, []string{"n1", "n2"}, map[string][]string{"n1": {"10.0.0.1", "n1.example"}})
	if err != nil {
		t.Fatal(err)
	}
	if !res.CreatedCA || len(res.Issued) != 3 {
		t.Errorf("result %+v", res)
	}
	for _, f := range []string{CAKeyFile, "n1-key.pem", "admin-key.pem"} {
		st, err := os.Stat(filepath.Join(dir, f))
		if err != nil || st.Mode().Perm() != 0o600 {
			t.Errorf("%s: %v mode %v, want 0600", f, err, st.Mode())
		}
	}
	b, _ := os.ReadFile(CertFile(dir, "n1"))
	blk, _ := pem.Decode(b)
	cert, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if cert.PublicKeyAlgorithm != x509.ECDSA || cert.Subject.CommonName != "n1" || len(cert.IPAddresses) != 1 || len(cert.DNSNames) != 2 {
		t.Errorf("n1 certificate: alg %v cn %q ips %v dns %v", cert.PublicKeyAlgorithm, cert.Subject.CommonName, cert.IPAddresses, cert.DNSNames)
	}
	// A second run keeps the CA and existing certificates, adds new nodes.
	res, err = InitCluster(dir, []string{"n1", "n3"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.CreatedCA || len(res.Issued) != 1 || res.Issued[0] != "n3" {
		t.Errorf("second run %+v", res)
	}
	if _, err := InitCluster(dir, []string{AdminName}, nil); err == nil {
		t.Error("a node named admin was accepted")
	}
}

// handshake runs a TLS 1.3 handshake over a pipe and returns both sides' errors.
func handshake(t *testing.T, server, client *tls.Config) (serr, cerr error) {
	t.Helper()
	// Loopback TCP, not net.Pipe: TLS 1.3 session tickets need a buffered transport.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	b, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	a, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	done := make(chan error, 1)
	go func() {
		s := tls.Server(a, server)
		err := s.Handshake()
		if err == nil {
			// TLS 1.3 verifies the client after the client's handshake ends: read to
			// surface it.
			_, err = s.Read(make([]byte, 1))
		}
		a.Close()
		done <- err
	}()
	c := tls.Client(b, client)
	cerr = c.Handshake()
	if cerr == nil {
		_, cerr = c.Write([]byte{1})
		if cerr == nil {
			_, cerr = c.Read(make([]byte, 1))
			if cerr != nil && strings.Contains(cerr.Error(), "EOF") || errors.Is(cerr, net.ErrClosed) {
				cerr = nil // the server closed after reading: fine
			}
		}
	}
	return <-done, cerr
}

func TestMutualTLS(t *testing.T) {
	good, other := t.TempDir(), t.TempDir()
	if _, err := InitCluster(good, []string{"n1", "n2", "n3"}, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := InitCluster(other, []string{"n2"}, nil); err != nil {
		t.Fatal(err)
	}
	peers := func() []string { return []string{"n2"} }
	server, err := ServerConfig(files(good, "n1"), PeersOrAdmin(peers))
	if err != nil {
		t.Fatal(err)
	}
	if server.MinVersion != tls.VersionTLS13 {
		t.Error("server allows TLS < 1.3")
	}
	client := func(dir, name, server string) *tls.Config {
		c, err := ClientConfig(files(dir, name), server)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	if serr, cerr := handshake(t, server, client(good, "n2", "n1")); serr != nil || cerr != nil {
		t.Fatalf("same cluster refused: server %v client %v", serr, cerr)
	}
	if serr, _ := handshake(t, server, client(good, "admin", "n1")); serr != nil {
		t.Errorf("admin refused: %v", serr)
	}
	// Client certificate of another CA: the server refuses it.
	otherClient := client(other, "n2", "n1")
	otherClient.RootCAs = server.ClientCAs // trust the server, so only the server decides
	if serr, _ := handshake(t, server, otherClient); serr == nil || !strings.Contains(serr.Error(), "unknown authority") {
		t.Errorf("client of another CA: server error %v, want unknown authority", serr)
	}
	// Server of another CA: the client refuses it.
	if _, cerr := handshake(t, server, client(other, "n2", "n1")); cerr == nil || !strings.Contains(cerr.Error(), "unknown authority") {
		t.Errorf("server of another CA: client error %v", cerr)
	}
	// A node of our CA that is not a configured peer.
	if serr, _ := handshake(t, server, client(good, "n3", "n1")); !errors.Is(serr, ErrUnknownPeer) {
		t.Errorf("unconfigured peer n3: %v, want ErrUnknownPeer", serr)
	}
	// The server's name must be the peer entry's.
	if _, cerr := handshake(t, server, client(good, "n2", "n9")); cerr == nil || !strings.Contains(cerr.Error(), "n9") {
		t.Errorf("name mismatch: client error %v", cerr)
	}
}

func TestIdentityNeedsSAN(t *testing.T) {
	ca, err := NewCA("t")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := IdentityOf(ca.Cert); err == nil {
		t.Error("CA certificate without a DNS SAN accepted as identity")
	}
}
