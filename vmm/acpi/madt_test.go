package acpi

import (
	"encoding/binary"
	"slices"
	"strings"
	"testing"
)

// madtAPICs returns the (processor UID, APIC ID) pairs of the MADT's enabled local-APIC entries.
func madtAPICs(t *testing.T, m []byte) (uids, ids []uint8) {
	t.Helper()
	if string(m[:4]) != "APIC" || int(binary.LittleEndian.Uint32(m[4:])) != len(m) || sum(m) != 0 {
		t.Fatalf("not a valid MADT: % x", m[:8])
	}
	for off := 44; off < len(m); {
		typ, n := m[off], int(m[off+1])
		if n < 2 || off+n > len(m) {
			t.Fatalf("MADT entry at %d has length %d", off, n)
		}
		if typ == 0 {
			if m[off+4]&1 == 0 {
				t.Fatalf("local APIC %d not enabled", m[off+3])
			}
			uids, ids = append(uids, m[off+2]), append(ids, m[off+3])
		}
		off += n
	}
	return uids, ids
}

func TestMADTTopologyAPICIDs(t *testing.T) {
	c := testConfig()
	c.CPUs, c.APICIDs = 6, []uint8{0, 1, 2, 4, 5, 6} // 2 sockets × 3 cores
	uids, ids := madtAPICs(t, MADT(c))
	if !slices.Equal(ids, c.APICIDs) || !slices.Equal(uids, []uint8{0, 1, 2, 3, 4, 5}) {
		t.Fatalf("MADT lists UIDs %v APIC IDs %v, want 0-5 and %v", uids, ids, c.APICIDs)
	}
	c.APICIDs = nil
	if _, ids := madtAPICs(t, MADT(c)); !slices.Equal(ids, []uint8{0, 1, 2, 3, 4, 5}) {
		t.Fatalf("default APIC IDs %v", ids)
	}
	for _, bad := range []struct {
		ids  []uint8
		want string
	}{
		{[]uint8{0, 1}, "2 APIC IDs for 6 CPUs"},
		{[]uint8{0, 1, 2, 3, 4, 4}, "given twice"},
		{[]uint8{0, 1, 2, 3, 4, 0xff}, "broadcast"},
	} {
		c.APICIDs = bad.ids
		if _, _, err := Build(c); err == nil || !strings.Contains(err.Error(), bad.want) {
			t.Errorf("APIC IDs %v: error %v, want %q", bad.ids, err, bad.want)
		}
	}
}
