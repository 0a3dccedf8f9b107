package controller

import (
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/types"
)

// ExpectationsTTL is how long unobserved expectations block a key before they are considered lost (as in
// Kubernetes' ReplicaSet controller: a watch event can be dropped, and a controller must not wedge).
const ExpectationsTTL = 5 * time.Minute

// Expectations records, per controller key, creations and deletions the controller issued but has not
// yet seen in its informer cache. While a key has outstanding expectations its sync must not create or
// delete again: a slow informer would otherwise make it create a second object or delete twice.
// It is a small re-implementation of Kubernetes' ControllerExpectations, keyed by UID for deletions so
// an unrelated delete event cannot satisfy it.
//
// Read order: a sync reads its key's expectations once, BEFORE it reads the objects they are about from
// the informer cache, as Kubernetes' ReplicaSet controller does (commit 63b22e6). A creation observed
// after that read is then already in the cache read next. The other order lets an object this
// controller created land in the cache, and satisfy the expectation, between the two reads: the sync
// sees neither and creates a second one. The decisions and the status of that sync use that one reading
// (plus what the sync itself issued), never a second one.
type Expectations struct {
	mu  sync.Mutex
	now func() time.Time
	m   map[string]*expectation
}

type expectation struct {
	adds      int
	dels      map[types.UID]bool
	timestamp time.Time
}

// NewExpectations returns an empty set.
func NewExpectations() *Expectations {
	return &Expectations{now: time.Now, m: map[string]*expectation{}}
}

func (e *Expectations) get(key string) *expectation {
	x := e.m[key]
	if x == nil {
		x = &expectation{dels: map[types.UID]bool{}}
		e.m[key] = x
	}
	x.timestamp = e.now()
	return x
}

// ExpectCreations records that n objects are about to be created for key.
func (e *Expectations) ExpectCreations(key string, n int) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.get(key).adds += n
}

// CreationObserved lowers the pending creations of key by one (an add event, or a failed create).
func (e *Expectations) CreationObserved(key string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if x := e.m[key]; x != nil && x.adds > 0 {
		x.adds--
	}
}

// ExpectDeletion records that the object with uid is about to be deleted for key.
func (e *Expectations) ExpectDeletion(key string, uid types.UID) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.get(key).dels[uid] = true
}

// DeletionObserved clears the pending deletion of uid (a delete event, or a failed delete).
func (e *Expectations) DeletionObserved(key string, uid types.UID) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if x := e.m[key]; x != nil {
		delete(x.dels, uid)
	}
}

// Satisfied reports whether key has nothing outstanding (or its expectations expired).
func (e *Expectations) Satisfied(key string) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	x := e.m[key]
	if x == nil {
		return true
	}
	if x.adds <= 0 && len(x.dels) == 0 {
		return true
	}
	return e.now().Sub(x.timestamp) > ExpectationsTTL
}

// Pending reports whether a creation (adds) or a deletion (dels) is outstanding and not expired.
func (e *Expectations) Pending(key string) (adds bool, dels bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	x := e.m[key]
	if x == nil || e.now().Sub(x.timestamp) > ExpectationsTTL {
		return false, false
	}
	return x.adds > 0, len(x.dels) > 0
}

// Forget drops everything recorded for key (the owner is gone).
func (e *Expectations) Forget(key string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	delete(e.m, key)
}
