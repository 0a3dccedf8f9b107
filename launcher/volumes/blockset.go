package volumes

// blockSet is the set of blocks an Overlay holds, for a disk of any virtual size: a radix tree of 64-way
// nodes over the block number whose bottom nodes are bitmaps of 4096 blocks (16 MiB of disk at 4 KiB
// blocks). An absent subtree is empty, and a subtree whose blocks are all in the set is the shared node
// full, so memory follows what the guest wrote rather than what the image claims (a 3 MiB qcow2 may claim
// 64 PiB, whose flat bitmap would be 2 TiB), and discarding a whole disk costs a handful of nodes.
// Callers serialise access (the Overlay's lock).
type blockSet struct {
	root   *bnode
	levels int // inner levels above the bottom one
}

type bnode struct {
	kids *[bsFan]*bnode   // inner node
	bits *[bsWords]uint64 // bottom node: bit b%64 of word b/64 is block b
}

const (
	bsFanBits    = 6
	bsFan        = 1 << bsFanBits
	bsBottomBits = 12 // blocks per bottom node: bsWords words of 64 bits
	bsWords      = 1 << (bsBottomBits - 6)
)

// full is every subtree all of whose blocks are in the set. It is never modified.
var full = &bnode{}

// newBlockSet returns the empty set for a disk of n blocks.
func newBlockSet(n int64) blockSet {
	levels := 0
	for span := int64(1) << bsBottomBits; span < n; span <<= bsFanBits {
		levels++
	}
	return blockSet{levels: levels}
}

// span is the number of blocks under a node at level (0: bottom).
func span(level int) int64 { return int64(1) << (bsBottomBits + bsFanBits*level) }

// has reports whether block b is in the set.
func (s *blockSet) has(b int64) bool {
	n := s.root
	for level := s.levels; ; level-- {
		switch {
		case n == nil:
			return false
		case n == full:
			return true
		case level == 0:
			i := b & (span(0) - 1)
			return n.bits[i/64]&(1<<(i%64)) != 0
		}
		n = n.kids[(b/span(level-1))&(bsFan-1)]
	}
}

// add puts blocks [from, to) into the set.
func (s *blockSet) add(from, to int64) {
	if from < to {
		s.root = add(s.root, s.levels, 0, from, to)
	}
}

// add puts [from, to) into the subtree n at level, which covers [base, base+span(level)), and returns the
// subtree: full once every block is in it.
func add(n *bnode, level int, base, from, to int64) *bnode {
	end := base + span(level)
	if n == full || from <= base && to >= end {
		return full
	}
	from, to = max(from, base)-base, min(to, end)-base
	if level == 0 {
		if n == nil {
			n = &bnode{bits: new([bsWords]uint64)}
		}
		for b := from; b < to; {
			bit := b % 64
			cnt := min(64-bit, to-b)
			mask := ^uint64(0)
			if cnt < 64 {
				mask = (uint64(1)<<cnt - 1) << bit
			}
			n.bits[b/64] |= mask
			b += cnt
		}
		for _, w := range n.bits {
			if w != ^uint64(0) {
				return n
			}
		}
		return full
	}
	if n == nil {
		n = &bnode{kids: new([bsFan]*bnode)}
	}
	child := span(level - 1)
	for i := from / child; i <= (to-1)/child; i++ {
		n.kids[i] = add(n.kids[i], level-1, base+i*child, base+from, base+to)
	}
	for _, k := range n.kids {
		if k != full {
			return n
		}
	}
	return full
}

// count is the number of blocks in the set.
func (s *blockSet) count() int64 { return count(s.root, s.levels) }

func count(n *bnode, level int) int64 {
	switch {
	case n == nil:
		return 0
	case n == full:
		return span(level)
	case level == 0:
		c := int64(0)
		for _, w := range n.bits {
			for ; w != 0; w &= w - 1 {
				c++
			}
		}
		return c
	}
	c := int64(0)
	for _, k := range n.kids {
		c += count(k, level-1)
	}
	return c
}
