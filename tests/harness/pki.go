package harness

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// PKI is the certificate authority and the key material of one cluster, written as PEM files under Dir.
type PKI struct {
	Dir    string
	CACert *x509.Certificate
	CAKey  crypto.Signer
	// CAPEM is the CA certificate in PEM form (what a client trusts).
	CAPEM []byte
}

// Paths of the files NewPKI writes, relative to PKI.Dir.
const (
	caCertFile = "ca.crt"
	caKeyFile  = "ca.key"
	saKeyFile  = "sa.key" // service-account token signing key (RSA)
	saPubFile  = "sa.pub"
)

// NewPKI creates a fresh CA (ECDSA P-256, valid one year) and a service-account signing key pair in dir.
func NewPKI(dir string) (*PKI, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("pki: %w", err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("pki: CA key: %w", err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: "kvirt-test-ca"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(365 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("pki: CA certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("pki: CA certificate: %w", err)
	}
	p := &PKI{Dir: dir, CACert: cert, CAKey: key, CAPEM: pemBlock("CERTIFICATE", der)}
	if err := p.write(caCertFile, p.CAPEM); err != nil {
		return nil, err
	}
	if err := p.writeKey(caKeyFile, key); err != nil {
		return nil, err
	}
	sa, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, fmt.Errorf("pki: service-account key: %w", err)
	}
	if err := p.writeKey(saKeyFile, sa); err != nil {
		return nil, err
	}
	pub, err := x509.MarshalPKIXPublicKey(sa.Public())
	if err != nil {
		return nil, fmt.Errorf("pki: service-account public key: %w", err)
	}
	if err := p.write(saPubFile, pemBlock("PUBLIC KEY", pub)); err != nil {
		return nil, err
	}
	return p, nil
}

// Path returns the absolute path of a file in the PKI directory.
func (p *PKI) Path(name string) string { return filepath.Join(p.Dir, name) }

// CertSpec describes one leaf certificate.
type CertSpec struct {
	Name         string   // file base name: <Name>.crt and <Name>.key
	CommonName   string   // the user name for client certificates
	Organization []string // the groups for client certificates
	Hosts        []string // DNS names or IP addresses for serving certificates
	Client       bool
	Server       bool
}

// Issue signs a new leaf certificate and writes <Name>.crt and <Name>.key; it returns both in PEM form.
func (p *PKI) Issue(s CertSpec) (certPEM, keyPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("pki: %s key: %w", s.Name, err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: s.CommonName, Organization: s.Organization},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(365 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
	}
	if s.Client {
		tmpl.ExtKeyUsage = append(tmpl.ExtKeyUsage, x509.ExtKeyUsageClientAuth)
	}
	if s.Server {
		tmpl.ExtKeyUsage = append(tmpl.ExtKeyUsage, x509.ExtKeyUsageServerAuth)
	}
	for _, h := range s.Hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.CACert, key.Public(), p.CAKey)
	if err != nil {
		return nil, nil, fmt.Errorf("pki: %s certificate: %w", s.Name, err)
	}
	certPEM = pemBlock("CERTIFICATE", der)
	if err := p.write(s.Name+".crt", certPEM); err != nil {
		return nil, nil, err
	}
	if err := p.writeKey(s.Name+".key", key); err != nil {
		return nil, nil, err
	}
	keyPEM, err = os.ReadFile(p.Path(s.Name + ".key"))
	if err != nil {
		return nil, nil, fmt.Errorf("pki: %w", err)
	}
	return certPEM, keyPEM, nil
}

func (p *PKI) write(name string, data []byte) error {
	if err := os.WriteFile(p.Path(name), data, 0o600); err != nil {
		return fmt.Errorf("pki: %w", err)
	}
	return nil
}

func (p *PKI) writeKey(name string, key crypto.Signer) error {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return fmt.Errorf("pki: %s: %w", name, err)
	}
	return p.write(name, pemBlock("PRIVATE KEY", der))
}

func pemBlock(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}

func serial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		panic(fmt.Sprintf("crypto/rand failed: %v", err)) // crypto/rand does not fail on Linux
	}
	return n
}
