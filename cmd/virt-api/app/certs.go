package app

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"slices"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apiserver/pkg/server/dynamiccertificates"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
)

// The serving certificate. virt-api keeps a CA and a serving certificate signed by it in one Secret that
// every replica shares (keys ca.crt, ca.key, tls.crt, tls.key), and the CA in the APIService's caBundle,
// so the aggregator trusts whichever replica it reaches. No manual step: the first replica to start
// creates the Secret (a replica that loses the race reads the winner's); every replica checks it every
// CertCheckInterval, renews the serving certificate RenewBefore its end (keeping the CA, so the caBundle
// stays valid for replicas still serving the old one), and serves the Secret's certificate as soon as it
// changes. A new CA is made only when the CA itself nears its end.
const (
	caLifetime    = 10 * 365 * 24 * time.Hour
	certLifetime  = 365 * 24 * time.Hour
	RenewBefore   = 90 * 24 * time.Hour
	secretCACert  = "ca.crt"
	secretCAKey   = "ca.key"
	secretTLSCert = corev1.TLSCertKey
	secretTLSKey  = corev1.TLSPrivateKeyKey
)

var apiServiceGVR = schema.GroupVersionResource{Group: "apiregistration.k8s.io", Version: "v1", Resource: "apiservices"}

// servingCert is the generic apiserver's serving certificate (a dynamiccertificates.CertKeyContentProvider
// and ControllerRunner) backed by the shared Secret.
type servingCert struct {
	kube       kubernetes.Interface
	dyn        dynamic.Interface
	namespace  string
	secret     string
	apiService string // "" = do not write a caBundle
	hosts      []string
	interval   time.Duration
	now        func() time.Time
	log        *slog.Logger

	mu        sync.Mutex
	cert, key []byte
	listeners []dynamiccertificates.Listener
}

var (
	_ dynamiccertificates.CertKeyContentProvider = (*servingCert)(nil)
	_ dynamiccertificates.ControllerRunner       = (*servingCert)(nil)
)

func (c *servingCert) Name() string {
	return "virt-api serving certificate (Secret " + c.namespace + "/" + c.secret + ")"
}

func (c *servingCert) CurrentCertKeyContent() ([]byte, []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.cert, c.key
}

func (c *servingCert) AddListener(l dynamiccertificates.Listener) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.listeners = append(c.listeners, l)
}

// RunOnce makes sure the Secret holds a valid certificate, serves it, and writes the CA into the
// APIService. A missing APIService is not an error here (it may be created after virt-api starts): Run
// keeps trying.
func (c *servingCert) RunOnce(ctx context.Context) error {
	data, err := c.ensureSecret(ctx)
	if err != nil {
		return err
	}
	c.mu.Lock()
	changed := !bytes.Equal(c.cert, data[secretTLSCert]) || !bytes.Equal(c.key, data[secretTLSKey])
	c.cert, c.key = data[secretTLSCert], data[secretTLSKey]
	listeners := slices.Clone(c.listeners)
	c.mu.Unlock()
	if changed {
		for _, l := range listeners {
			l.Enqueue()
		}
	}
	if c.apiService != "" {
		if err := c.ensureCABundle(ctx, data[secretCACert]); err != nil {
			c.log.Warn("cannot write the CA into the APIService yet; retrying", "apiservice", c.apiService, "err", err)
		}
	}
	return nil
}

// Run repeats RunOnce every interval until ctx ends.
func (c *servingCert) Run(ctx context.Context, _ int) {
	t := time.NewTicker(c.interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if err := c.RunOnce(ctx); err != nil && ctx.Err() == nil {
			c.log.Warn("serving certificate check failed", "err", err)
		}
	}
}

// ensureSecret returns the Secret's data once it holds a certificate valid for our hosts for longer than
// RenewBefore, creating or renewing it first if needed. Concurrent replicas race through the apiserver:
// a create that finds the Secret, or an update that finds it changed, reads it again.
func (c *servingCert) ensureSecret(ctx context.Context) (map[string][]byte, error) {
	secrets := c.kube.CoreV1().Secrets(c.namespace)
	for range 5 {
		s, err := secrets.Get(ctx, c.secret, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			data, err := issue(nil, c.hosts, c.now())
			if err != nil {
				return nil, err
			}
			s = &corev1.Secret{
				ObjectMeta: metav1.ObjectMeta{Name: c.secret, Namespace: c.namespace,
					Labels: map[string]string{"app.kubernetes.io/name": "virt-api", "app.kubernetes.io/part-of": "kvirt"}},
				Type: corev1.SecretTypeTLS,
				Data: data,
			}
			if _, err := secrets.Create(ctx, s, metav1.CreateOptions{}); apierrors.IsAlreadyExists(err) {
				continue
			} else if err != nil {
				return nil, fmt.Errorf("create Secret %s/%s: %w", c.namespace, c.secret, err)
			}
			c.log.Info("created the serving certificate", "secret", c.secret)
			return data, nil
		} else if err != nil {
			return nil, fmt.Errorf("read Secret %s/%s: %w", c.namespace, c.secret, err)
		}
		ca, ok := certNeed(s.Data, c.hosts, c.now())
		if ok {
			return s.Data, nil
		}
		data, err := issue(ca, c.hosts, c.now())
		if err != nil {
			return nil, err
		}
		s = s.DeepCopy()
		s.Data = data
		if _, err := secrets.Update(ctx, s, metav1.UpdateOptions{}); apierrors.IsConflict(err) {
			continue
		} else if err != nil {
			return nil, fmt.Errorf("update Secret %s/%s: %w", c.namespace, c.secret, err)
		}
		c.log.Info("renewed the serving certificate", "secret", c.secret, "newCA", ca == nil)
		return data, nil
	}
	return nil, fmt.Errorf("secret %s/%s keeps changing under us", c.namespace, c.secret)
}

// ensureCABundle writes caPEM into the APIService's spec.caBundle unless it is there already.
func (c *servingCert) ensureCABundle(ctx context.Context, caPEM []byte) error {
	as, err := c.dyn.Resource(apiServiceGVR).Get(ctx, c.apiService, metav1.GetOptions{})
	if err != nil {
		return err
	}
	if cur, _, _ := unstructured.NestedString(as.Object, "spec", "caBundle"); cur == base64.StdEncoding.EncodeToString(caPEM) {
		return nil
	}
	patch, err := json.Marshal(map[string]any{"spec": map[string]any{"caBundle": caPEM}})
	if err != nil {
		return err
	}
	if _, err := c.dyn.Resource(apiServiceGVR).Patch(ctx, c.apiService, types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
		return err
	}
	c.log.Info("wrote the CA into the APIService", "apiservice", c.apiService)
	return nil
}

// certNeed decides about the Secret's data at now: ok when its serving certificate is valid for every
// host for longer than RenewBefore and signed by its CA; otherwise ca is the CA to sign a new one with
// (nil: the CA is missing, broken or itself near its end, so make a new one).
func certNeed(data map[string][]byte, hosts []string, now time.Time) (ca *keyPair, ok bool) {
	ca, err := parseKeyPair(data[secretCACert], data[secretCAKey])
	if err != nil || !ca.cert.IsCA || now.Add(RenewBefore).After(ca.cert.NotAfter) {
		return nil, false
	}
	leaf, err := parseKeyPair(data[secretTLSCert], data[secretTLSKey])
	if err != nil || now.Add(RenewBefore).After(leaf.cert.NotAfter) || now.Before(leaf.cert.NotBefore) {
		return ca, false
	}
	if leaf.cert.CheckSignatureFrom(ca.cert) != nil {
		return ca, false
	}
	for _, h := range hosts {
		if leaf.cert.VerifyHostname(h) != nil {
			return ca, false
		}
	}
	return ca, true
}

type keyPair struct {
	cert *x509.Certificate
	key  crypto.Signer
	pem  []byte // the certificate
	kpem []byte // the key
}

func parseKeyPair(certPEM, keyPEM []byte) (*keyPair, error) {
	tc, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(tc.Certificate[0])
	if err != nil {
		return nil, err
	}
	signer, ok := tc.PrivateKey.(crypto.Signer)
	if !ok {
		return nil, errors.New("private key cannot sign")
	}
	return &keyPair{cert: cert, key: signer, pem: certPEM, kpem: keyPEM}, nil
}

// issue makes a serving certificate for hosts (ECDSA P-256) signed by ca, making a new CA first when ca
// is nil, and returns the Secret's data.
func issue(ca *keyPair, hosts []string, now time.Time) (map[string][]byte, error) {
	if ca == nil {
		var err error
		if ca, err = newCert(nil, "virt-api-ca", nil, now, caLifetime); err != nil {
			return nil, err
		}
	}
	leaf, err := newCert(ca, "virt-api", hosts, now, certLifetime)
	if err != nil {
		return nil, err
	}
	return map[string][]byte{secretCACert: ca.pem, secretCAKey: ca.kpem, secretTLSCert: leaf.pem, secretTLSKey: leaf.kpem}, nil
}

// newCert makes a CA (parent nil: self-signed) or a serving certificate for hosts signed by parent.
func newCert(parent *keyPair, cn string, hosts []string, now time.Time, lifetime time.Duration) (*keyPair, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("serving certificate: %w", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 120))
	if err != nil {
		return nil, fmt.Errorf("serving certificate: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    now.Add(-5 * time.Minute), // clock skew between replicas and the apiserver
		NotAfter:     now.Add(lifetime),
		KeyUsage:     x509.KeyUsageDigitalSignature,
	}
	signerCert, signerKey := tmpl, crypto.Signer(key)
	if parent == nil {
		tmpl.IsCA, tmpl.BasicConstraintsValid = true, true
		tmpl.KeyUsage |= x509.KeyUsageCertSign
	} else {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		tmpl.DNSNames = hosts
		signerCert, signerKey = parent.cert, parent.key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, signerCert, key.Public(), signerKey)
	if err != nil {
		return nil, fmt.Errorf("serving certificate: %w", err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("serving certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("serving certificate: %w", err)
	}
	return &keyPair{cert: cert, key: key,
		pem:  pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		kpem: pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder})}, nil
}

// serviceHosts are the names the aggregator may verify: it dials the Service as <name>.<namespace>.svc.
func serviceHosts(service, namespace string) []string {
	return []string{service, service + "." + namespace, service + "." + namespace + ".svc", service + "." + namespace + ".svc.cluster.local"}
}
