package app

import (
	"maps"
	"testing"
	"time"
)

// certNeed decides from the Secret alone: keep, renew the serving certificate with the CA, or start over.
func TestCertNeed(t *testing.T) {
	now := time.Date(2026, 12, 8, 0, 0, 0, 0, time.UTC)
	hosts := serviceHosts("virt-api", "kubevirt")
	fresh, err := issue(nil, hosts, now)
	if err != nil {
		t.Fatal(err)
	}
	// A serving certificate near its end, from the same CA.
	ca, err := parseKeyPair(fresh[secretCACert], fresh[secretCAKey])
	if err != nil {
		t.Fatal(err)
	}
	old, err := issue(ca, hosts, now.Add(-certLifetime+RenewBefore-time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	otherCA, err := issue(nil, hosts, now)
	if err != nil {
		t.Fatal(err)
	}
	with := func(base map[string][]byte, k string, v []byte) map[string][]byte {
		m := maps.Clone(base)
		m[k] = v
		return m
	}
	for _, tc := range []struct {
		name   string
		data   map[string][]byte
		hosts  []string
		at     time.Time
		ok     bool
		keepCA bool
	}{
		{"valid", fresh, hosts, now, true, true},
		{"valid until RenewBefore", fresh, hosts, now.Add(certLifetime - RenewBefore - time.Hour), true, true},
		{"serving certificate expiring", old, hosts, now, false, true},
		{"serving certificate broken", with(fresh, secretTLSCert, []byte("x")), hosts, now, false, true},
		{"key of another certificate", with(fresh, secretTLSKey, otherCA[secretTLSKey]), hosts, now, false, true},
		{"signed by another CA", with(fresh, secretTLSCert, otherCA[secretTLSCert]), hosts, now, false, true},
		{"another service name", fresh, serviceHosts("virt-api", "other"), now, false, true},
		{"not yet valid", fresh, hosts, now.Add(-time.Hour), false, true},
		{"CA expiring", fresh, hosts, now.Add(caLifetime - RenewBefore + time.Hour), false, false},
		{"CA missing", with(fresh, secretCAKey, nil), hosts, now, false, false},
		{"empty Secret", map[string][]byte{}, hosts, now, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			gotCA, ok := certNeed(tc.data, tc.hosts, tc.at)
			if ok != tc.ok || (gotCA != nil) != tc.keepCA {
				t.Errorf("ok %t, CA kept %t; want %t, %t", ok, gotCA != nil, tc.ok, tc.keepCA)
			}
			if ok || gotCA == nil {
				return
			}
			// What issue makes from the kept CA is valid at once.
			data, err := issue(gotCA, tc.hosts, tc.at)
			if err != nil {
				t.Fatal(err)
			}
			if _, ok := certNeed(data, tc.hosts, tc.at); !ok {
				t.Error("the renewed certificate is not accepted")
			}
		})
	}
}
