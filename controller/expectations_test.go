package controller

import (
	"testing"
	"time"
)

func TestExpectations(t *testing.T) {
	e := NewExpectations()
	now := time.Unix(0, 0)
	e.now = func() time.Time { return now }
	if !e.Satisfied("k") {
		t.Fatal("empty not satisfied")
	}
	e.ExpectCreations("k", 1)
	if e.Satisfied("k") {
		t.Fatal("pending create satisfied")
	}
	e.CreationObserved("k")
	if !e.Satisfied("k") {
		t.Fatal("observed create not satisfied")
	}
	e.ExpectDeletion("k", "a")
	e.DeletionObserved("k", "b")
	if e.Satisfied("k") {
		t.Fatal("a deletion of another UID satisfied it")
	}
	now = now.Add(ExpectationsTTL + time.Second)
	if !e.Satisfied("k") {
		t.Fatal("expired expectations still block")
	}
}
