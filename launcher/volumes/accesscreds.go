package volumes

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// AccessCredentialsDir is where the launcher pod has the Secrets of spec.accessCredentials mounted, one
// directory per Secret named <secretName>-access-cred (KubeVirt's layout); controller/pod.go mounts them.
const AccessCredentialsDir = "/var/run/kvirt/access-credentials"

// maxPublicKeyBytes bounds what is read from one Secret.
const maxPublicKeyBytes = 1 << 20

// AccessCredentialDir is the directory of Secret secretName under root (empty in the pod; a directory
// standing for / in local runs).
func AccessCredentialDir(root, secretName string) string {
	return filepath.Join(root, AccessCredentialsDir, secretName+"-access-cred")
}

// ReadSSHPublicKeys reads the public keys of a mounted Secret: every value (file) holds one or more keys, one
// per line; blank lines and # comments are skipped. Files are read in name order. field names the
// accessCredentials entry for errors.
func ReadSSHPublicKeys(field, root, secretName string) ([]string, error) {
	dir := AccessCredentialDir(root, secretName)
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fieldErr(field, "Secret %q is not mounted at %s: %w (in a cluster the controller mounts it; for virt-launcher run, put its keys under --root)", secretName, dir, err)
	}
	var keys []string
	var total int64
	for _, e := range ents {
		// The kubelet's secret volume holds ..data and ..<timestamp> entries next to the key symlinks.
		if e.IsDir() || strings.HasPrefix(e.Name(), "..") {
			continue
		}
		p := filepath.Join(dir, e.Name())
		st, err := os.Stat(p)
		if err != nil || st.IsDir() {
			continue
		}
		if total += st.Size(); total > maxPublicKeyBytes {
			return nil, fieldErr(field, "Secret %q holds more than %d bytes of keys", secretName, maxPublicKeyBytes)
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return nil, fieldErr(field, "Secret %q, key %s: %w", secretName, e.Name(), err)
		}
		for n, line := range strings.Split(string(data), "\n") {
			line = strings.TrimSpace(line)
			if line == "" || strings.HasPrefix(line, "#") {
				continue
			}
			if !utf8.ValidString(line) || strings.ContainsFunc(line, unicode.IsControl) {
				return nil, fieldErr(field, "Secret %q, key %s, line %d is not text: not an SSH public key", secretName, e.Name(), n+1)
			}
			keys = append(keys, line)
		}
	}
	if len(keys) == 0 {
		return nil, fieldErr(field, "Secret %q holds no SSH public key", secretName)
	}
	return keys, nil
}

// metaData is the NoCloud meta-data: instance-id, local-hostname and, when keys are given, public-keys as
// KubeVirt writes it (a map "0", "1", ... → key), which cloud-init installs for the default user. Values
// are double-quoted (Go's escapes are YAML's), so no key or name can break the document or turn into a
// number or boolean.
func metaData(nc NoCloud) []byte {
	var b strings.Builder
	fmt.Fprintf(&b, "instance-id: %s\nlocal-hostname: %s\n", strconv.Quote(nc.InstanceID), strconv.Quote(nc.Hostname))
	if len(nc.PublicKeys) > 0 {
		b.WriteString("public-keys:\n")
		for i, k := range nc.PublicKeys {
			fmt.Fprintf(&b, "  %q: %s\n", strconv.Itoa(i), strconv.Quote(k))
		}
	}
	return []byte(b.String())
}
