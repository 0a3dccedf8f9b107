package queue

import (
	"encoding/binary"
	"errors"
	"fmt"
	"testing"
)

// mem is a heap-backed fake guest RAM at base for single-goroutine tests.
type mem struct {
	base uint64
	b    []byte
}

func (m *mem) Slice(gpa, n uint64) ([]byte, error) {
	if gpa < m.base || gpa-m.base > uint64(len(m.b)) || n > uint64(len(m.b))-(gpa-m.base) {
		return nil, fmt.Errorf("%#x+%#x outside guest RAM", gpa, n)
	}
	o := gpa - m.base
	return m.b[o : o+n : o+n], nil
}

const (
	tDesc  = 0x10000
	tAvail = 0x11000
	tUsed  = 0x12000
	tData  = 0x20000
	tSize  = 16
)

func newTestQueue(t testing.TB, features uint64) (*Queue, *mem) {
	m := &mem{base: 0x1000, b: make([]byte, 1<<20)}
	q := New(tSize)
	q.DescAddr, q.DriverAddr, q.DeviceAddr, q.Ready = tDesc, tAvail, tUsed, true
	if err := q.Activate(m, features); err != nil {
		t.Fatal(err)
	}
	return q, m
}

func (m *mem) desc(i int, addr uint64, n uint32, flags, next uint16) {
	b, _ := m.Slice(tDesc+16*uint64(i), 16)
	binary.LittleEndian.PutUint64(b, addr)
	binary.LittleEndian.PutUint32(b[8:], n)
	binary.LittleEndian.PutUint16(b[12:], flags)
	binary.LittleEndian.PutUint16(b[14:], next)
}

func (m *mem) put16(gpa uint64, v uint16) {
	b, _ := m.Slice(gpa, 2)
	binary.LittleEndian.PutUint16(b, v)
}

func (m *mem) get16(gpa uint64) uint16 {
	b, _ := m.Slice(gpa, 2)
	return binary.LittleEndian.Uint16(b)
}

func (m *mem) publish(slot int, head uint16) {
	m.put16(tAvail+4+2*uint64(slot%tSize), head)
	m.put16(tAvail+2, uint16(slot+1))
}

func TestPopPush(t *testing.T) {
	q, m := newTestQueue(t, 0)
	m.desc(3, tData, 16, DescFNext, 5)
	m.desc(5, tData+16, 100, DescFNext|DescFWrite, 7)
	m.desc(7, tData+200, 1, DescFWrite, 0)
	m.publish(0, 3)
	c, err := q.Pop()
	if err != nil || c == nil {
		t.Fatalf("pop: %v %v", c, err)
	}
	if c.Head != 3 || len(c.Readable) != 1 || len(c.Writable) != 2 || c.ReadableLen() != 16 || c.WritableLen() != 101 {
		t.Fatalf("chain %+v", c)
	}
	if c2, err := q.Pop(); c2 != nil || err != nil {
		t.Fatalf("second pop: %v %v", c2, err)
	}
	need, err := q.PushAndCheck(3, 101)
	if err != nil || !need {
		t.Fatalf("push: need=%v err=%v", need, err)
	}
	if got := m.get16(tUsed + 2); got != 1 {
		t.Fatalf("used idx %d", got)
	}
	e, _ := m.Slice(tUsed+4, 8)
	if binary.LittleEndian.Uint32(e) != 3 || binary.LittleEndian.Uint32(e[4:]) != 101 {
		t.Fatalf("used elem % x", e)
	}
	// NO_INTERRUPT suppresses without EVENT_IDX.
	m.put16(tAvail, 1)
	if need, _ := q.PushAndCheck(3, 0); need {
		t.Fatal("interrupt despite VIRTQ_AVAIL_F_NO_INTERRUPT")
	}
}

func TestEventIdx(t *testing.T) {
	q, m := newTestQueue(t, 1<<FeatureEventIdx)
	// used_event = 2: interrupt only when used idx passes 2 (i.e. after the 3rd completion).
	m.put16(tAvail+4+2*tSize, 2)
	var got []bool
	for i := 0; i < 4; i++ {
		need, err := q.PushAndCheck(0, 0)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, need)
	}
	// First push always signals (no previous signal); then only the one crossing used_event.
	want := []bool{true, false, true, false}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("interrupts %v, want %v", got, want)
	}
	// avail_event: the device publishes where it will look next.
	m.desc(0, tData, 8, 0, 0)
	m.publish(0, 0)
	if c, err := q.Pop(); c == nil || err != nil {
		t.Fatal(c, err)
	}
	more, err := q.EnableNotify()
	if err != nil || more {
		t.Fatalf("EnableNotify more=%v err=%v", more, err)
	}
	if ae := m.get16(tUsed + 4 + 8*tSize); ae != 1 {
		t.Fatalf("avail_event %d, want 1", ae)
	}
	m.publish(1, 0)
	if more, _ := q.EnableNotify(); !more {
		t.Fatal("EnableNotify missed a pending chain")
	}
}

func TestIndirect(t *testing.T) {
	q, m := newTestQueue(t, 1<<FeatureIndirectDesc)
	tbl := uint64(tData + 0x1000)
	put := func(i int, addr uint64, n uint32, flags, next uint16) {
		b, _ := m.Slice(tbl+16*uint64(i), 16)
		binary.LittleEndian.PutUint64(b, addr)
		binary.LittleEndian.PutUint32(b[8:], n)
		binary.LittleEndian.PutUint16(b[12:], flags)
		binary.LittleEndian.PutUint16(b[14:], next)
	}
	put(0, tData, 16, DescFNext, 1)
	put(1, tData+16, 512, DescFNext|DescFWrite, 2)
	put(2, tData+1024, 1, DescFWrite, 0)
	m.desc(9, tbl, 48, DescFIndirect, 0)
	m.publish(0, 9)
	c, err := q.Pop()
	if err != nil {
		t.Fatal(err)
	}
	if c.Head != 9 || c.ReadableLen() != 16 || c.WritableLen() != 513 {
		t.Fatalf("chain %+v", c)
	}
}

func TestMalformed(t *testing.T) {
	cases := []struct {
		name  string
		setup func(m *mem)
		feat  uint64
	}{
		{"loop", func(m *mem) {
			m.desc(0, tData, 8, DescFNext, 1)
			m.desc(1, tData, 8, DescFNext, 0)
		}, 0},
		{"self loop", func(m *mem) { m.desc(0, tData, 8, DescFNext, 0) }, 0},
		{"next out of range", func(m *mem) { m.desc(0, tData, 8, DescFNext, tSize) }, 0},
		{"buffer outside RAM", func(m *mem) { m.desc(0, 1<<40, 8, 0, 0) }, 0},
		{"buffer wraps", func(m *mem) { m.desc(0, ^uint64(0)-3, 8, 0, 0) }, 0},
		{"buffer crosses end", func(m *mem) { m.desc(0, 0x1000+(1<<20)-4, 8, 0, 0) }, 0},
		{"indirect not negotiated", func(m *mem) { m.desc(0, tData, 16, DescFIndirect, 0) }, 0},
		{"indirect bad len", func(m *mem) { m.desc(0, tData, 17, DescFIndirect, 0) }, 1 << FeatureIndirectDesc},
		{"indirect zero len", func(m *mem) { m.desc(0, tData, 0, DescFIndirect, 0) }, 1 << FeatureIndirectDesc},
		{"indirect with next", func(m *mem) { m.desc(0, tData, 16, DescFIndirect|DescFNext, 1) }, 1 << FeatureIndirectDesc},
		{"indirect outside RAM", func(m *mem) { m.desc(0, 1<<40, 16, DescFIndirect, 0) }, 1 << FeatureIndirectDesc},
		{"nested indirect", func(m *mem) {
			m.desc(0, tData, 16, DescFIndirect, 0)
			b, _ := m.Slice(tData, 16)
			binary.LittleEndian.PutUint64(b, tData)
			binary.LittleEndian.PutUint32(b[8:], 16)
			binary.LittleEndian.PutUint16(b[12:], DescFIndirect)
		}, 1 << FeatureIndirectDesc},
		{"indirect loop", func(m *mem) {
			m.desc(0, tData, 32, DescFIndirect, 0)
			b, _ := m.Slice(tData, 32)
			binary.LittleEndian.PutUint64(b, tData+100)
			binary.LittleEndian.PutUint32(b[8:], 4)
			binary.LittleEndian.PutUint16(b[12:], DescFNext)
			binary.LittleEndian.PutUint16(b[14:], 1)
			binary.LittleEndian.PutUint64(b[16:], tData+100)
			binary.LittleEndian.PutUint32(b[24:], 4)
			binary.LittleEndian.PutUint16(b[28:], DescFNext)
			binary.LittleEndian.PutUint16(b[30:], 0)
		}, 1 << FeatureIndirectDesc},
		{"readable after writable", func(m *mem) {
			m.desc(0, tData, 8, DescFNext|DescFWrite, 1)
			m.desc(1, tData, 8, 0, 0)
		}, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			q, m := newTestQueue(t, tc.feat)
			tc.setup(m)
			m.publish(0, 0)
			c, err := q.Pop()
			if err == nil || !errors.Is(err, ErrInvalid) {
				t.Fatalf("pop = %+v, %v; want ErrInvalid", c, err)
			}
		})
	}
	t.Run("head out of range", func(t *testing.T) {
		q, m := newTestQueue(t, 0)
		m.publish(0, tSize)
		if _, err := q.Pop(); !errors.Is(err, ErrInvalid) {
			t.Fatalf("err %v", err)
		}
	})
	t.Run("avail idx jumps", func(t *testing.T) {
		q, m := newTestQueue(t, 0)
		m.put16(tAvail+2, tSize+1)
		if _, err := q.Pop(); !errors.Is(err, ErrInvalid) {
			t.Fatalf("err %v", err)
		}
	})
}

func TestActivateChecks(t *testing.T) {
	m := &mem{base: 0x1000, b: make([]byte, 1<<20)}
	for _, tc := range []struct {
		name             string
		size             uint16
		desc, avail, use uint64
	}{
		{"size zero", 0, tDesc, tAvail, tUsed},
		{"size not power of two", 12, tDesc, tAvail, tUsed},
		{"size above max", 32, tDesc, tAvail, tUsed},
		{"desc misaligned", 16, tDesc + 8, tAvail, tUsed},
		{"used misaligned", 16, tDesc, tAvail, tUsed + 2},
		{"desc outside RAM", 16, 1 << 40, tAvail, tUsed},
		{"used crosses end", 16, tDesc, tAvail, 0x1000 + (1 << 20) - 8},
	} {
		q := New(tSize)
		q.Size, q.DescAddr, q.DriverAddr, q.DeviceAddr = tc.size, tc.desc, tc.avail, tc.use
		if err := q.Activate(m, 0); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: Activate = %v, want ErrInvalid", tc.name, err)
		}
	}
}

// FuzzWalkChain feeds arbitrary descriptor tables (and an indirect table) to the chain walker: it must
// return a chain whose buffers lie inside guest RAM, or an error — never panic or loop.
func FuzzWalkChain(f *testing.F) {
	desc := func(addr uint64, n uint32, flags, next uint16) []byte {
		b := make([]byte, 16)
		binary.LittleEndian.PutUint64(b, addr)
		binary.LittleEndian.PutUint32(b[8:], n)
		binary.LittleEndian.PutUint16(b[12:], flags)
		binary.LittleEndian.PutUint16(b[14:], next)
		return b
	}
	cat := func(bs ...[]byte) []byte {
		var o []byte
		for _, b := range bs {
			o = append(o, b...)
		}
		return o
	}
	// virtio-blk read: header, data, status.
	f.Add(cat(desc(0x3000, 16, 1, 1), desc(0x4000, 4096, 3, 2), desc(0x5000, 1, 2, 0)), []byte{}, uint16(0), true)
	// virtio-net rx mergeable buffer.
	f.Add(cat(desc(0x3000, 1526, 2, 0)), []byte{}, uint16(0), true)
	// indirect blk write with 3 data segments.
	f.Add(cat(desc(0x6000, 80, 4, 0)),
		cat(desc(0x3000, 16, 1, 1), desc(0x4000, 512, 1, 2), desc(0x4200, 512, 1, 3), desc(0x4400, 512, 1, 4), desc(0x5000, 1, 2, 0)),
		uint16(0), true)
	f.Add(cat(desc(0x3000, 16, 1, 0)), []byte{}, uint16(0), false)
	f.Add(cat(desc(0x3000, 16, 1, 1), desc(0x3000, 16, 1, 0)), []byte{}, uint16(1), true)
	f.Fuzz(func(t *testing.T, table, indirect []byte, head uint16, allowIndirect bool) {
		const base, size = 0x1000, 0x10000
		m := &mem{base: base, b: make([]byte, size)}
		copy(m.b[0x1000:0x2000], table) // descriptor table at 0x2000
		copy(m.b[0x5000:], indirect)    // indirect table at 0x6000 (seeds point there)
		n := uint16(len(table) / 16)
		if n == 0 {
			n = 1
		}
		var c Chain
		err := WalkChain(m, 0x2000, n, head, allowIndirect, &c)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("error not ErrInvalid: %v", err)
			}
			return
		}
		if len(c.Readable)+len(c.Writable) > int(n)+MaxSize {
			t.Fatalf("chain of %d buffers from a table of %d", len(c.Readable)+len(c.Writable), n)
		}
	})
}
