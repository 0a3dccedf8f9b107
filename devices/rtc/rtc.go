// Package rtc models the MC146818 RTC and CMOS RAM at ports 0x70/0x71: the wall-clock time (BCD, 24 h)
// from the host clock, and the memory-size registers firmware conventionally leaves there.
package rtc

import (
	"sync"
	"time"
)

// Size is the bus range at port 0x70 (index at offset 0, data at offset 1).
const Size = 2

// RTC is the CMOS device; it implements bus.Device.
type RTC struct {
	mu    sync.Mutex
	index uint8
	cmos  [128]byte
	now   func() time.Time
	// offset is the guest-set time minus the host time.
	offset time.Duration
}

// New returns an RTC whose CMOS memory registers describe lowMem bytes of RAM below 4 GiB and highMem
// bytes above. now defaults to time.Now.
func New(lowMem, highMem uint64, now func() time.Time) *RTC {
	if now == nil {
		now = time.Now
	}
	r := &RTC{now: now}
	r.cmos[0x0a] = 0x26 // 32.768 kHz, 1024 Hz
	r.cmos[0x0b] = 0x02 // 24 h, BCD
	r.cmos[0x0d] = 0x80 // valid RAM and time
	ext := uint64(0)
	if lowMem > 1<<20 {
		ext = min((lowMem-(1<<20))>>10, 0xffff) // KiB between 1 MiB and 64 MiB
	}
	r.cmos[0x17], r.cmos[0x18] = byte(ext), byte(ext>>8)
	r.cmos[0x30], r.cmos[0x31] = byte(ext), byte(ext>>8)
	if lowMem > 16<<20 {
		b := min((lowMem-(16<<20))>>16, 0xffff) // 64 KiB blocks above 16 MiB
		r.cmos[0x34], r.cmos[0x35] = byte(b), byte(b>>8)
	}
	h := highMem >> 16
	r.cmos[0x5b], r.cmos[0x5c], r.cmos[0x5d] = byte(h), byte(h>>8), byte(h>>16)
	return r
}

func bcd(v int) byte { return byte(v/10<<4 | v%10) }

func unbcd(b byte) int { return int(b>>4)*10 + int(b&0xf) }

func (r *RTC) reg(i uint8) byte {
	t := r.now().Add(r.offset).UTC()
	switch i {
	case 0x00:
		return bcd(t.Second())
	case 0x02:
		return bcd(t.Minute())
	case 0x04:
		return bcd(t.Hour())
	case 0x06:
		return bcd(int(t.Weekday()) + 1)
	case 0x07:
		return bcd(t.Day())
	case 0x08:
		return bcd(int(t.Month()))
	case 0x09:
		return bcd(t.Year() % 100)
	case 0x32:
		return bcd(t.Year() / 100)
	case 0x0c:
		return 0
	}
	return r.cmos[i&0x7f]
}

// Read implements bus.Device.
func (r *RTC) Read(off uint64, data []byte) {
	for i := range data {
		data[i] = 0
	}
	if len(data) == 0 {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	switch off {
	case 0:
		data[0] = r.index
	case 1:
		data[0] = r.reg(r.index)
	}
}

// Write implements bus.Device. Writes to the time registers move the guest's clock relative to the host.
func (r *RTC) Write(off uint64, data []byte) {
	if len(data) == 0 {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	switch off {
	case 0:
		r.index = data[0] & 0x7f
	case 1:
		i, v := r.index, data[0]
		switch i {
		case 0x00, 0x02, 0x04, 0x07, 0x08, 0x09, 0x32:
			t := r.now().Add(r.offset).UTC()
			sec, mn, hr, d, mo, y := t.Second(), t.Minute(), t.Hour(), t.Day(), int(t.Month()), t.Year()
			n := unbcd(v)
			switch i {
			case 0x00:
				sec = n
			case 0x02:
				mn = n
			case 0x04:
				hr = n
			case 0x07:
				d = n
			case 0x08:
				mo = n
			case 0x09:
				y = y/100*100 + n
			case 0x32:
				y = n*100 + y%100
			}
			nt := time.Date(y, time.Month(mo), d, hr, mn, sec, 0, time.UTC)
			r.offset = nt.Sub(r.now())
		case 0x0a, 0x0b, 0x0c, 0x0d:
			if i == 0x0b {
				r.cmos[i] = v | 0x02 // stay in 24 h mode
			}
		default:
			r.cmos[i] = v
		}
	}
}
