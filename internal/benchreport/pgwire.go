//go:build unix

package main

import (
	"bytes"
	"encoding/binary"
	"io"
	"net"
	"sync"
)

// wireProxy forwards PostgreSQL connections and reads the messages
// clients send: it counts round trips (each Sync or simple Query message
// is one wait for the server) and keeps the text of each statement a
// client parses, so that the report shows what the store sends as it
// sends it.
type wireProxy struct {
	ln     net.Listener
	target string

	mu      sync.Mutex
	trips   int
	queries []string
	conns   []net.Conn
	wg      sync.WaitGroup
}

func startWireProxy(target string) (*wireProxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &wireProxy{ln: ln, target: target}
	p.wg.Add(1)
	go p.accept()
	return p, nil
}

func (p *wireProxy) addr() string { return p.ln.Addr().String() }

// reset zeroes the counts.
func (p *wireProxy) reset() {
	p.mu.Lock()
	p.trips, p.queries = 0, nil
	p.mu.Unlock()
}

// counts returns the round trips and statements since reset.
func (p *wireProxy) counts() (int, []string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.trips, append([]string(nil), p.queries...)
}

func (p *wireProxy) close() {
	_ = p.ln.Close()
	p.mu.Lock()
	for _, c := range p.conns {
		_ = c.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
}

func (p *wireProxy) accept() {
	defer p.wg.Done()
	for {
		client, err := p.ln.Accept()
		if err != nil {
			return
		}
		server, err := net.Dial("tcp", p.target)
		if err != nil {
			_ = client.Close()
			continue
		}
		p.mu.Lock()
		p.conns = append(p.conns, client, server)
		p.mu.Unlock()
		p.wg.Add(2)
		go func() {
			defer p.wg.Done()
			_, _ = io.Copy(client, server)
			_ = client.Close()
		}()
		go func() {
			defer p.wg.Done()
			p.forward(server, client)
			_ = server.Close()
		}()
	}
}

// forward copies client bytes to the server, reading the messages.
func (p *wireProxy) forward(server, client net.Conn) {
	var pending []byte
	startup := true // the first messages have no type byte
	buf := make([]byte, 32<<10)
	for {
		n, err := client.Read(buf)
		if n > 0 {
			pending = append(pending, buf[:n]...)
			pending, startup = p.parse(pending, startup)
			if _, werr := server.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// parse consumes the complete messages at the start of b and returns the
// rest.
func (p *wireProxy) parse(b []byte, startup bool) ([]byte, bool) {
	for {
		if startup {
			if len(b) < 8 {
				return b, true
			}
			n := int(binary.BigEndian.Uint32(b))
			if len(b) < n {
				return b, true
			}
			code := binary.BigEndian.Uint32(b[4:8])
			b = b[n:]
			// An SSL or GSS encryption request is followed by another
			// untyped message, the startup message.
			startup = n == 8 && (code == 80877103 || code == 80877104)
			continue
		}
		if len(b) < 5 {
			return b, false
		}
		n := 1 + int(binary.BigEndian.Uint32(b[1:5]))
		if len(b) < n {
			return b, false
		}
		msg := b[:n]
		p.mu.Lock()
		switch msg[0] {
		case 'S', 'Q': // Sync, Query: the client now waits for the server
			p.trips++
		}
		if msg[0] == 'P' { // Parse: name\0 query\0 ...
			body := msg[5:]
			if i := bytes.IndexByte(body, 0); i >= 0 {
				if j := bytes.IndexByte(body[i+1:], 0); j >= 0 {
					p.queries = append(p.queries, string(body[i+1:i+1+j]))
				}
			}
		}
		p.mu.Unlock()
		b = b[n:]
	}
}
