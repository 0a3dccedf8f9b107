package integration_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"net"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// servedCert returns the leaf certificate virt-api presents at addr, verified against caPEM for the
// Service name the aggregator uses.
func servedCert(addr string, caPEM []byte) ([]byte, error) {
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, fmt.Errorf("no CA in %q", caPEM)
	}
	d := &net.Dialer{Timeout: 5 * time.Second}
	conn, err := tls.DialWithDialer(d, "tcp", addr, &tls.Config{RootCAs: pool, ServerName: "virt-api.kubevirt.svc"})
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	return conn.ConnectionState().PeerCertificates[0].Raw, nil
}

func pemDER(t *testing.T, certPEM []byte) []byte {
	t.Helper()
	b, _ := pem.Decode(certPEM)
	if b == nil {
		t.Fatalf("no PEM in %q", certPEM)
	}
	return b.Bytes
}

// The replicas share one serving certificate, created by the first; its CA is in the APIService; a
// broken or expiring certificate is replaced (same CA) and every replica serves the new one.
func TestServingCertificateSharedAndRenewed(t *testing.T) {
	e := setup(t)
	ctx := context.Background()
	secrets := e.kube.CoreV1().Secrets(virtAPINamespace)
	s, err := secrets.Get(ctx, "virt-api-certs", metav1.GetOptions{})
	if err != nil {
		t.Fatalf("virt-api did not create its Secret: %v", err)
	}
	ca := s.Data["ca.crt"]
	as, err := e.dyn.Resource(apiServiceGVR).Get(ctx, "v1.subresources.kubevirt.io", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if b, _, _ := unstructured.NestedString(as.Object, "spec", "caBundle"); b != base64.StdEncoding.EncodeToString(ca) {
		t.Errorf("APIService caBundle is not the Secret's CA")
	}

	// A second replica reads the same Secret.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e.startVirtAPI(l)
	addrs := []string{fmt.Sprintf("127.0.0.1:%d", e.apiPort), l.Addr().String()}
	waitServing := func(want []byte) {
		t.Helper()
		deadline := time.Now().Add(60 * time.Second)
		for _, addr := range addrs {
			for {
				got, err := servedCert(addr, ca)
				if err == nil && bytes.Equal(got, want) {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("%s does not serve the Secret's certificate: %v", addr, err)
				}
				time.Sleep(100 * time.Millisecond)
			}
		}
	}
	waitServing(pemDER(t, s.Data["tls.crt"]))

	// Break the certificate: a replica replaces it with a new one from the same CA, and both serve it.
	s.Data["tls.crt"] = []byte("not a certificate")
	if _, err := secrets.Update(ctx, s, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	var renewed []byte
	deadline := time.Now().Add(60 * time.Second)
	for {
		s, err = secrets.Get(ctx, "virt-api-certs", metav1.GetOptions{})
		if err == nil && !bytes.Equal(s.Data["tls.crt"], []byte("not a certificate")) {
			renewed = s.Data["tls.crt"]
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the certificate was not renewed: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if !bytes.Equal(s.Data["ca.crt"], ca) {
		t.Error("renewing the serving certificate replaced the CA")
	}
	waitServing(pemDER(t, renewed))
	// The aggregator still reaches virt-api.
	if err := e.waitAvailable(ctx); err != nil {
		t.Fatal(err)
	}
	if err := e.kubecli(t, "").Get().AbsPath("/apis/subresources.kubevirt.io/v1/version").Do(ctx).Error(); err != nil {
		t.Errorf("version after renewal: %v", err)
	}
}
