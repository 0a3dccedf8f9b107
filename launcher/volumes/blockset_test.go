package volumes

import (
	"encoding/binary"
	"math/rand"
	"testing"
)

// checkBlockSet applies ranges (pairs of offsets, taken modulo n) to a blockSet and to a plain bitmap and
// compares every block and the count.
func checkBlockSet(t *testing.T, n int64, ranges []int64) {
	t.Helper()
	s := newBlockSet(n)
	model := make([]bool, n)
	for i := 0; i+1 < len(ranges); i += 2 {
		from, to := ranges[i]%n, ranges[i+1]%(n+1)
		if from > to {
			from, to = to, from
		}
		s.add(from, to)
		for b := from; b < to; b++ {
			model[b] = true
		}
	}
	want := int64(0)
	for b, m := range model {
		if s.has(int64(b)) != m {
			t.Fatalf("n=%d ranges %v: block %d in the set %v, want %v", n, ranges, b, !m, m)
		}
		if m {
			want++
		}
	}
	if got := s.count(); got != want {
		t.Fatalf("n=%d ranges %v: count %d, want %d", n, ranges, got, want)
	}
}

func TestBlockSetModel(t *testing.T) {
	rng := rand.New(rand.NewSource(1))
	for _, n := range []int64{1, 63, 64, 4095, 4096, 4097, 1 << 18, 1<<18 + 77} {
		for range 20 {
			var ranges []int64
			for range rng.Intn(12) {
				from := rng.Int63n(n)
				ranges = append(ranges, from, from+rng.Int63n(min(n-from, 1<<rng.Intn(19))+1))
			}
			checkBlockSet(t, n, ranges)
		}
		checkBlockSet(t, n, []int64{0, n}) // all of it
	}
}

// nodes counts the allocated nodes under n.
func nodes(n *bnode) int {
	if n == nil || n == full {
		return 0
	}
	c := 1
	if n.kids != nil {
		for _, k := range n.kids {
			c += nodes(k)
		}
	}
	return c
}

// A whole disk of 2^44 blocks (64 PiB) in the set is the root node over full subtrees.
func TestBlockSetHugeDisk(t *testing.T) {
	const n = int64(1) << 44
	s := newBlockSet(n)
	s.add(n-1, n)
	s.add(0, 1)
	if !s.has(0) || !s.has(n-1) || s.has(n/2) || s.count() != 2 {
		t.Fatalf("two blocks: has %v %v %v, count %d", s.has(0), s.has(n-1), s.has(n/2), s.count())
	}
	if c := nodes(s.root); c != 2*s.levels+1 {
		t.Fatalf("two blocks at either end take %d nodes, want %d", c, 2*s.levels+1)
	}
	s.add(0, n)
	if c := nodes(s.root); c != 1 || s.count() != n {
		t.Fatalf("whole disk: %d nodes, count %d", c, s.count())
	}
}

// FuzzBlockSet: any sequence of ranges gives the set a plain bitmap holds.
func FuzzBlockSet(f *testing.F) {
	f.Add(uint32(5000), []byte{0, 0, 0, 10, 0, 0, 0x10, 0})
	f.Fuzz(func(t *testing.T, n uint32, ops []byte) {
		nn := int64(n%(1<<18)) + 1
		var ranges []int64
		for len(ops) >= 4 && len(ranges) < 64 {
			ranges = append(ranges, int64(binary.LittleEndian.Uint32(ops)))
			ops = ops[4:]
		}
		checkBlockSet(t, nn, ranges)
	})
}
