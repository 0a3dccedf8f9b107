package rng

import (
	"bytes"
	"encoding/binary"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/kvirt/kvirt/devices/virtio/mmio"
	"github.com/kvirt/kvirt/devices/virtio/queue"
	"github.com/kvirt/kvirt/devices/virtio/virtiotest"
)

func TestEntropy(t *testing.T) {
	for _, tc := range []struct {
		name     string
		features uint64
		indirect bool
	}{
		{"plain", 1 << queue.FeatureVersion1, false},
		{"eventidx", 1<<queue.FeatureVersion1 | 1<<queue.FeatureEventIdx, false},
		{"indirect", 1<<queue.FeatureVersion1 | 1<<queue.FeatureIndirectDesc | 1<<queue.FeatureEventIdx, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d, tr := virtiotest.Attach(t, New(), tc.features, 4<<20)
			q := d.Queues[0]
			for round := 0; round < 20; round++ {
				a := d.Mem.Alloc(100, 16)
				b := d.Mem.Alloc(28, 16)
				bufs := []virtiotest.Buf{{Addr: a, Len: 100, Write: true}, {Addr: b, Len: 28, Write: true}}
				var head uint16
				var err error
				if tc.indirect {
					head, err = q.AddIndirect(bufs)
				} else {
					head, err = q.Add(bufs)
				}
				if err != nil {
					t.Fatal(err)
				}
				q.Kick()
				us, err := q.Wait(1, 10*time.Second)
				if err != nil {
					t.Fatal(err)
				}
				if us[0].Head != head || us[0].Len != 128 {
					t.Fatalf("used %+v, want head %d len 128", us[0], head)
				}
				if bytes.Equal(d.Mem.Bytes(a, 100), make([]byte, 100)) {
					t.Fatalf("buffer still zero")
				}
			}
			if tr.NeedsReset() {
				t.Fatal("device flagged needs-reset")
			}
		})
	}
}

// A kick through the ioeventfd (what KVM does when the VMM registered it) reaches the device too.
func TestIoeventfdKick(t *testing.T) {
	d, tr := virtiotest.Attach(t, New(), 1<<queue.FeatureVersion1, 4<<20)
	q := d.Queues[0]
	a := d.Mem.Alloc(64, 16)
	if _, err := q.Add([]virtiotest.Buf{{Addr: a, Len: 64, Write: true}}); err != nil {
		t.Fatal(err)
	}
	ns := tr.QueueNotifiers()
	if len(ns) != 1 || ns[0].Offset != mmio.NotifyOffset || ns[0].Datamatch != 0 {
		t.Fatalf("notifiers %+v", ns)
	}
	var one [8]byte
	binary.LittleEndian.PutUint64(one[:], 1)
	if _, err := unix.Write(ns[0].FD, one[:]); err != nil {
		t.Fatal(err)
	}
	if _, err := q.Wait(1, 10*time.Second); err != nil {
		t.Fatal(err)
	}
}
