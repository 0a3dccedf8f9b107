// Command disk-check is the end-to-end suite's probe of a volume from a plain pod: it writes a
// pseudo-random pattern to a file or block device and makes it durable, or reads it back, and prints the
// SHA-256 of what it wrote or read as "disk-check: <op> <path> sha256=<hex> bytes=<n>".
//
//	disk-check write PATH SEED BYTES   write BYTES bytes derived from SEED at offset 0, fsync
//	disk-check read PATH BYTES         read BYTES bytes at offset 0
//
// It is a static binary in the image kvirt.io/disk-check:e2e that the suite builds (images/oci) and loads.
package main

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"strconv"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "disk-check:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	if len(args) < 3 {
		return fmt.Errorf("usage: disk-check write PATH SEED BYTES | disk-check read PATH BYTES")
	}
	op, path := args[0], args[1]
	n, err := strconv.ParseInt(args[len(args)-1], 10, 64)
	if err != nil || n <= 0 {
		return fmt.Errorf("BYTES %q: want a positive number", args[len(args)-1])
	}
	buf := make([]byte, n)
	switch {
	case op == "write" && len(args) == 4:
		seed, err := strconv.ParseUint(args[2], 10, 64)
		if err != nil {
			return fmt.Errorf("SEED %q: %w", args[2], err)
		}
		r := rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8), byte(seed >> 16), byte(seed >> 24)})
		r.Read(buf)
		f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
		if err != nil {
			return err
		}
		if _, err := f.WriteAt(buf, 0); err != nil {
			f.Close()
			return err
		}
		if err := f.Sync(); err != nil {
			f.Close()
			return fmt.Errorf("fsync %s: %w", path, err)
		}
		if err := f.Close(); err != nil {
			return err
		}
	case op == "read" && len(args) == 3:
		f, err := os.Open(path)
		if err != nil {
			return err
		}
		defer f.Close()
		if _, err := io.ReadFull(io.NewSectionReader(f, 0, n), buf); err != nil {
			return fmt.Errorf("read %d bytes of %s: %w", n, path, err)
		}
	default:
		return fmt.Errorf("unknown operation %q (or wrong number of arguments)", op)
	}
	sum := sha256.Sum256(buf)
	fmt.Printf("disk-check: %s %s sha256=%s bytes=%d\n", op, path, hex.EncodeToString(sum[:]), n)
	return nil
}
