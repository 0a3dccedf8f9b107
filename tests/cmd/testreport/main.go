// Command testreport reads `go test -json` on stdin and tells the truth about a run: each package's
// result as `go test` prints it, the whole output of every failed test, a heartbeat while packages run,
// and every skipped test with its reason. Skips are appended (JSON lines) to -skips, so that the CI run
// can close with one line naming exactly what did not run on this machine and why:
//
//	go test -json ./... | testreport -stage unit -skips build/ci/skips.jsonl
//	testreport -summary build/ci/skips.jsonl
//
// It exits 1 when a test or package failed, or when the stream held no test event at all (a run that
// tested nothing is not a pass).
package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"time"
)

func main() {
	stage := flag.String("stage", "tests", "name printed in heartbeat and summary lines")
	verbose := flag.Bool("v", false, "print every output line as it arrives (as go test -v)")
	skips := flag.String("skips", "", "append skipped tests to this file (JSON lines)")
	summary := flag.String("summary", "", "print the closing summary of the skips recorded in this file, then exit")
	beat := flag.Duration("heartbeat", time.Minute, "interval of progress lines while packages run (0: none)")
	flag.Parse()

	if *summary != "" {
		recs, err := readSkips(*summary)
		if err != nil {
			fmt.Fprintf(os.Stderr, "testreport: %v\n", err)
			os.Exit(2)
		}
		fmt.Println(summarize(recs))
		return
	}

	r := newReport(*stage, os.Stdout, *verbose)
	events := make(chan event)
	errc := make(chan error, 1)
	go func() { errc <- decode(os.Stdin, events) }()
	var tick <-chan time.Time
	if *beat > 0 {
		t := time.NewTicker(*beat)
		defer t.Stop()
		tick = t.C
	}
loop:
	for {
		select {
		case ev, ok := <-events:
			if !ok {
				break loop
			}
			r.handle(ev)
		case now := <-tick:
			r.heartbeat(now)
		}
	}
	if err := <-errc; err != nil {
		fmt.Fprintf(os.Stdout, "[%s] reading go test -json: %v\n", *stage, err)
		r.failed = true
	}
	r.finish()
	if *skips != "" {
		if err := appendSkips(*skips, r.skipped); err != nil {
			fmt.Fprintf(os.Stderr, "testreport: %v\n", err)
			os.Exit(2)
		}
	}
	if r.failed {
		os.Exit(1)
	}
}

// decode sends each test2json event of in to out and closes it. A line that is not an event (output
// go test printed outside test2json, e.g. a vet failure) becomes an output event of no package.
func decode(in io.Reader, out chan<- event) error {
	defer close(out)
	sc := bufio.NewScanner(in)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for sc.Scan() {
		line := sc.Bytes()
		var ev event
		if len(line) == 0 || line[0] != '{' || json.Unmarshal(line, &ev) != nil {
			ev = event{Action: "output", Output: string(line) + "\n"}
		}
		out <- ev
	}
	return sc.Err()
}
