package pki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/migratehq/migrate/runtime/atomicfile"
)

// Roles, carried in a certificate's organizational unit.
const (
	RoleNode  = "migrate-node"
	RoleAdmin = "migrate-admin"
)

// AdminName is the name of the admin certificate `cluster init` writes.
const AdminName = "admin"

// File names in a cluster directory.
const (
	CAFile    = "ca.pem"
	CAKeyFile = "ca-key.pem"
)

// CertFile and KeyFile name the files of name's certificate and key in a cluster directory.
func CertFile(dir, name string) string { return filepath.Join(dir, name+".pem") }

// KeyFile names the file of name's private key in a cluster directory.
func KeyFile(dir, name string) string { return filepath.Join(dir, name+"-key.pem") }

// Errors callers branch on.
var (
	ErrUnknownPeer = errors.New("peer is not a configured node")
	ErrWrongRole   = errors.New("certificate role not allowed")
)

const (
	caValidity   = 10 * 365 * 24 * time.Hour
	leafValidity = 2 * 365 * 24 * time.Hour
)

// CA is a cluster certificate authority.
type CA struct {
	Cert *x509.Certificate
	Key  *ecdsa.PrivateKey
}

// NewCA creates a self-signed CA named cluster.
func NewCA(cluster string) (*CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate CA key: %w", err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: cluster + " CA", Organization: []string{"migrate"}},
		NotBefore:             now.Add(-5 * time.Minute),
		NotAfter:              now.Add(caValidity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("create CA certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &CA{Cert: cert, Key: key}, nil
}

// Issue creates a certificate for name with role. Node certificates serve and
// authenticate clients; admin certificates only authenticate clients. hosts adds DNS
// names or IP addresses to the name itself.
func (ca *CA) Issue(name, role string, hosts ...string) (certPEM, keyPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("generate key for %s: %w", name, err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: name, OrganizationalUnit: []string{role}, Organization: []string{"migrate"}},
		NotBefore:    now.Add(-5 * time.Minute),
		NotAfter:     now.Add(leafValidity),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		DNSNames:     []string{name},
	}
	if role == RoleNode {
		tmpl.ExtKeyUsage = append(tmpl.ExtKeyUsage, x509.ExtKeyUsageServerAuth)
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else if h != name {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &key.PublicKey, ca.Key)
	if err != nil {
		return nil, nil, fmt.Errorf("create certificate for %s: %w", name, err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), nil
}

// PEM returns the CA certificate and key in PEM.
func (ca *CA) PEM() (certPEM, keyPEM []byte, err error) {
	kder, err := x509.MarshalECPrivateKey(ca.Key)
	if err != nil {
		return nil, nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.Cert.Raw}),
		pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), nil
}

// LoadCA reads a CA written by InitCluster.
func LoadCA(dir string) (*CA, error) {
	cb, err := os.ReadFile(filepath.Join(dir, CAFile))
	if err != nil {
		return nil, err
	}
	kb, err := os.ReadFile(filepath.Join(dir, CAKeyFile))
	if err != nil {
		return nil, err
	}
	pair, err := tls.X509KeyPair(cb, kb)
	if err != nil {
		return nil, fmt.Errorf("load CA from %s: %w", dir, err)
	}
	key, ok := pair.PrivateKey.(*ecdsa.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("load CA from %s: key is not ECDSA", dir)
	}
	cert, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		return nil, err
	}
	return &CA{Cert: cert, Key: key}, nil
}

// InitResult lists what InitCluster wrote.
type InitResult struct {
	CreatedCA bool
	Issued    []string // names that got a new certificate
	Kept      []string // names whose existing certificate was kept
}

// InitCluster makes dir a cluster directory: a CA (reused when present) and a
// certificate for each node plus the admin certificate (existing ones are kept).
// hosts adds per-node SANs (IP addresses or DNS names) besides the node name.
func InitCluster(dir string, nodes []string, hosts map[string][]string) (*InitResult, error) {
	for _, n := range nodes {
		if n == AdminName {
			return nil, fmt.Errorf("node name %q is reserved for the admin certificate", n)
		}
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	res := &InitResult{}
	ca, err := LoadCA(dir)
	if errors.Is(err, os.ErrNotExist) {
		if ca, err = NewCA("migrate"); err != nil {
			return nil, err
		}
		cp, kp, err := ca.PEM()
		if err != nil {
			return nil, err
		}
		if err := atomicfile.WriteFile(filepath.Join(dir, CAKeyFile), kp, 0o600); err != nil {
			return nil, err
		}
		if err := atomicfile.WriteFile(filepath.Join(dir, CAFile), cp, 0o644); err != nil {
			return nil, err
		}
		res.CreatedCA = true
	} else if err != nil {
		return nil, err
	}
	issue := func(name, role string, hosts []string) error {
		if _, err := os.Stat(CertFile(dir, name)); err == nil {
			res.Kept = append(res.Kept, name)
			return nil
		}
		cp, kp, err := ca.Issue(name, role, hosts...)
		if err != nil {
			return err
		}
		if err := atomicfile.WriteFile(KeyFile(dir, name), kp, 0o600); err != nil {
			return err
		}
		if err := atomicfile.WriteFile(CertFile(dir, name), cp, 0o644); err != nil {
			return err
		}
		res.Issued = append(res.Issued, name)
		return nil
	}
	for _, n := range nodes {
		if err := issue(n, RoleNode, hosts[n]); err != nil {
			return nil, err
		}
	}
	if err := issue(AdminName, RoleAdmin, nil); err != nil {
		return nil, err
	}
	return res, nil
}

func serial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		panic(err) // crypto/rand does not fail on Linux
	}
	return n
}

// Identity is the authenticated name and role of a TLS peer.
type Identity struct {
	Name string
	Role string
}

// IdentityOf returns the identity of a verified leaf certificate. The common name must
// also be a DNS SAN so that the name a client verified equals the name we authorize.
func IdentityOf(cert *x509.Certificate) (Identity, error) {
	name := cert.Subject.CommonName
	if name == "" || !slices.Contains(cert.DNSNames, name) {
		return Identity{}, fmt.Errorf("certificate of %q does not carry its name as a DNS SAN", name)
	}
	if len(cert.Subject.OrganizationalUnit) != 1 {
		return Identity{}, fmt.Errorf("certificate of %q: %w: no single role", name, ErrWrongRole)
	}
	return Identity{Name: name, Role: cert.Subject.OrganizationalUnit[0]}, nil
}

// Files names the TLS material of one holder.
type Files struct {
	CA, Cert, Key string
}

func (f Files) load() (tls.Certificate, *x509.CertPool, error) {
	pair, err := tls.LoadX509KeyPair(f.Cert, f.Key)
	if err != nil {
		return tls.Certificate{}, nil, fmt.Errorf("load certificate: %w", err)
	}
	cab, err := os.ReadFile(f.CA)
	if err != nil {
		return tls.Certificate{}, nil, fmt.Errorf("load CA: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(cab) {
		return tls.Certificate{}, nil, fmt.Errorf("load CA: no certificate in %s", f.CA)
	}
	return pair, pool, nil
}

// Authorize decides whether a verified client identity may connect at all.
type Authorize func(Identity) error

// PeersOrAdmin allows nodes named in peers and admin certificates.
func PeersOrAdmin(peers func() []string) Authorize {
	return func(id Identity) error {
		switch id.Role {
		case RoleAdmin:
			return nil
		case RoleNode:
			if slices.Contains(peers(), id.Name) {
				return nil
			}
			return fmt.Errorf("%w: %q", ErrUnknownPeer, id.Name)
		}
		return fmt.Errorf("%w: %q", ErrWrongRole, id.Role)
	}
}

// ServerConfig is the TLS 1.3 server side of the peer listener: clients must present a
// certificate of the cluster CA whose identity auth accepts.
func ServerConfig(f Files, auth Authorize) (*tls.Config, error) {
	pair, pool, err := f.load()
	if err != nil {
		return nil, err
	}
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{pair},
		ClientCAs:    pool,
		ClientAuth:   tls.RequireAndVerifyClientCert,
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return errors.New("no client certificate")
			}
			id, err := IdentityOf(cs.PeerCertificates[0])
			if err != nil {
				return err
			}
			return auth(id)
		},
	}, nil
}

// ClientConfig is the TLS 1.3 client side towards the node called serverName: its
// certificate must be of the cluster CA, name serverName and have the node role.
func ClientConfig(f Files, serverName string) (*tls.Config, error) {
	pair, pool, err := f.load()
	if err != nil {
		return nil, err
	}
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{pair},
		RootCAs:      pool,
		ServerName:   serverName,
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return errors.New("no server certificate")
			}
			id, err := IdentityOf(cs.PeerCertificates[0])
			if err != nil {
				return err
			}
			if id.Role != RoleNode || id.Name != serverName {
				return fmt.Errorf("%w: server is %s %q, want node %q", ErrWrongRole, id.Role, id.Name, serverName)
			}
			return nil
		},
	}, nil
}
