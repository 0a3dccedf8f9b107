// Package serial models a 16550A UART: output to an io.Writer, input queued by the VMM, and an edge
// interrupt when the transmitter empties or data arrives. It never panics on guest input.
package serial

import (
	"io"
	"sync"
)

// Register offsets.
const (
	regData = 0 // RBR/THR, DLL when DLAB
	regIER  = 1 // DLM when DLAB
	regIIR  = 2 // FCR on write
	regLCR  = 3
	regMCR  = 4
	regLSR  = 5
	regMSR  = 6
	regSCR  = 7

	ierRDA  = 0x01
	ierTHRE = 0x02
	iirNone = 0x01
	iirTHRE = 0x02
	iirRDA  = 0x04
	iirFIFO = 0xc0
	lcrDLAB = 0x80
	mcrLoop = 0x10
	lsrDR   = 0x01
	lsrTHRE = 0x20
	lsrTEMT = 0x40

	// InputBufferSize bounds the queued, not yet read, input bytes.
	InputBufferSize = 4096
)

// Interrupt is an edge-triggered interrupt line.
type Interrupt interface{ Trigger() error }

// Serial is a 16550A UART. Read/Write implement bus.Device.
type Serial struct {
	mu        sync.Mutex
	out       io.Writer
	irq       Interrupt
	in        []byte
	space     chan struct{} // signalled when the guest consumed input
	ier, lcr  uint8
	mcr, scr  uint8
	fcr       uint8
	dll, dlm  uint8
	thrPend   bool
	outErrors int
}

// New returns a UART writing guest output to out (nil discards) and raising irq (nil: polled mode only).
func New(out io.Writer, irq Interrupt) *Serial {
	if out == nil {
		out = io.Discard
	}
	return &Serial{out: out, irq: irq, dll: 0x0c, lcr: 0x03, mcr: 0x08, space: make(chan struct{}, 1)}
}

func (s *Serial) iir() uint8 {
	v := uint8(iirNone)
	switch {
	case s.ier&ierRDA != 0 && len(s.in) > 0:
		v = iirRDA
	case s.ier&ierTHRE != 0 && s.thrPend:
		v = iirTHRE
	}
	if s.fcr&1 != 0 {
		v |= iirFIFO
	}
	return v
}

func (s *Serial) trigger() {
	if s.irq != nil {
		_ = s.irq.Trigger()
	}
}

// Read handles a guest register read (only the first byte of wider accesses is meaningful).
func (s *Serial) Read(off uint64, data []byte) {
	if len(data) == 0 {
		return
	}
	for i := range data {
		data[i] = 0
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var v uint8
	switch off {
	case regData:
		if s.lcr&lcrDLAB != 0 {
			v = s.dll
		} else if len(s.in) > 0 {
			v = s.in[0]
			s.in = s.in[1:]
			select {
			case s.space <- struct{}{}:
			default:
			}
		}
	case regIER:
		if s.lcr&lcrDLAB != 0 {
			v = s.dlm
		} else {
			v = s.ier
		}
	case regIIR:
		v = s.iir()
		if v&0x0f == iirTHRE {
			s.thrPend = false
		}
	case regLCR:
		v = s.lcr
	case regMCR:
		v = s.mcr
	case regLSR:
		v = lsrTHRE | lsrTEMT
		if len(s.in) > 0 {
			v |= lsrDR
		}
	case regMSR:
		if s.mcr&mcrLoop != 0 {
			// Loopback: DTR->DSR, RTS->CTS, OUT1->RI, OUT2->DCD.
			m := s.mcr
			v = (m&0x01)<<5 | (m&0x02)<<3 | (m&0x04)<<4 | (m&0x08)<<4
		} else {
			v = 0xb0 // DCD, DSR, CTS
		}
	case regSCR:
		v = s.scr
	}
	data[0] = v
}

// Write handles a guest register write.
func (s *Serial) Write(off uint64, data []byte) {
	if len(data) == 0 {
		return
	}
	v := data[0]
	s.mu.Lock()
	defer s.mu.Unlock()
	switch off {
	case regData:
		if s.lcr&lcrDLAB != 0 {
			s.dll = v
			return
		}
		if s.mcr&mcrLoop != 0 {
			if len(s.in) < InputBufferSize {
				s.in = append(s.in, v)
			}
		} else if _, err := s.out.Write([]byte{v}); err != nil {
			s.outErrors++
		}
		s.thrPend = true
		if s.ier&ierTHRE != 0 || (s.mcr&mcrLoop != 0 && s.ier&ierRDA != 0) {
			s.trigger()
		}
	case regIER:
		if s.lcr&lcrDLAB != 0 {
			s.dlm = v
			return
		}
		old := s.ier
		s.ier = v & 0x0f
		if s.ier&ierTHRE != 0 && old&ierTHRE == 0 {
			s.thrPend = true
			s.trigger()
		}
		if s.ier&ierRDA != 0 && old&ierRDA == 0 && len(s.in) > 0 {
			s.trigger()
		}
	case regIIR:
		s.fcr = v
		if v&0x02 != 0 { // clear receive FIFO
			s.in = s.in[:0]
		}
	case regLCR:
		s.lcr = v
	case regMCR:
		s.mcr = v & 0x1f
	case regSCR:
		s.scr = v
	}
}

// Enqueue queues input bytes for the guest and returns how many fit (the rest must be retried after
// Space signals).
func (s *Serial) Enqueue(p []byte) int {
	s.mu.Lock()
	n := min(len(p), InputBufferSize-len(s.in))
	wasEmpty := len(s.in) == 0
	s.in = append(s.in, p[:n]...)
	fire := n > 0 && wasEmpty && s.ier&ierRDA != 0
	s.mu.Unlock()
	if fire {
		s.trigger()
	}
	return n
}

// Space is signalled (capacity 1) when the guest consumed input.
func (s *Serial) Space() <-chan struct{} { return s.space }

// Pump copies r into the guest's input until r fails or done is closed. Run it in its own goroutine.
func (s *Serial) Pump(r io.Reader, done <-chan struct{}) error {
	buf := make([]byte, 256)
	for {
		n, err := r.Read(buf)
		p := buf[:n]
		for len(p) > 0 {
			k := s.Enqueue(p)
			p = p[k:]
			if len(p) > 0 {
				select {
				case <-s.space:
				case <-done:
					return nil
				}
			}
		}
		if err != nil {
			return err
		}
		select {
		case <-done:
			return nil
		default:
		}
	}
}
