package main

import (
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"sync"
	"syscall"
)

// reaper is the single place that waits for child processes. As PID 1, kvirt-init inherits every orphan,
// so one loop reaps any child (wait4(-1)) and hands the status of the processes it started itself to
// whoever is waiting for them. Holding mu while starting a process guarantees its pid is registered
// before the loop can reap it.
type reaper struct {
	mu      sync.Mutex
	waiters map[int]chan syscall.WaitStatus
}

func newReaper(reapAll bool) *reaper {
	r := &reaper{waiters: map[int]chan syscall.WaitStatus{}}
	sigchld := make(chan os.Signal, 1)
	signal.Notify(sigchld, syscall.SIGCHLD)
	go func() {
		for range sigchld {
			r.reap(reapAll)
		}
	}()
	return r
}

// reap collects every child that has exited. When not PID 1 (tests), only registered children are reaped.
func (r *reaper) reap(reapAll bool) {
	for {
		var ws syscall.WaitStatus
		pid := -1
		if !reapAll {
			r.mu.Lock()
			pid = 0
			for p := range r.waiters {
				pid = p
				break
			}
			r.mu.Unlock()
			if pid == 0 {
				return
			}
		}
		got, err := syscall.Wait4(pid, &ws, syscall.WNOHANG, nil)
		if err == syscall.EINTR {
			continue
		}
		if err != nil || got <= 0 {
			return
		}
		r.mu.Lock()
		ch, ok := r.waiters[got]
		delete(r.waiters, got)
		r.mu.Unlock()
		if ok {
			ch <- ws
		}
	}
}

// runPath runs the named command, found in $PATH, with args.
func (r *reaper) runPath(name string, args ...string) (int, error) {
	path, err := exec.LookPath(name)
	if err != nil {
		return -1, err
	}
	return r.run(path, append([]string{busyboxName(path, name)}, args...), nil)
}

// busyboxName is the argv[0] that makes u-root's busybox run the command at path: it dispatches on
// argv[0], so for an alias such as /bin/sh -> ../bbin/gosh -> bb it must be "gosh", not "sh". It follows
// symbolic links up to the busybox binary "bb" and returns the last name before it.
func busyboxName(path, name string) string {
	argv0 := name
	for i := 0; i < 8; i++ {
		l, err := os.Readlink(path)
		if err != nil || filepath.Base(l) == "bb" {
			break
		}
		argv0 = filepath.Base(l)
		if !filepath.IsAbs(l) {
			l = filepath.Join(filepath.Dir(path), l)
		}
		path = l
	}
	return argv0
}

// run starts argv[0] with the console as stdio and waits for it, returning its exit code.
func (r *reaper) run(path string, argv []string, attr *syscall.SysProcAttr) (int, error) {
	r.mu.Lock()
	pid, err := syscall.ForkExec(path, argv, &syscall.ProcAttr{
		Env:   os.Environ(),
		Files: []uintptr{0, 1, 2},
		Sys:   attr,
	})
	var ch chan syscall.WaitStatus
	if err == nil {
		ch = make(chan syscall.WaitStatus, 1)
		r.waiters[pid] = ch
	}
	r.mu.Unlock()
	if err != nil {
		return -1, fmt.Errorf("start %s: %w", path, err)
	}
	// A SIGCHLD may have arrived before registration; reap once more now that the pid is known.
	r.reap(os.Getpid() == 1)
	ws := <-ch
	switch {
	case ws.Exited():
		return ws.ExitStatus(), nil
	case ws.Signaled():
		return -1, fmt.Errorf("%s killed by %v", path, ws.Signal())
	}
	return -1, fmt.Errorf("%s: wait status %#x", path, uint32(ws))
}
