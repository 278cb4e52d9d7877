package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"time"
)

// freePorts asks the kernel for n distinct unused loopback ports. They are released before
// the components bind them, which is racy in theory but fine on a test machine.
func freePorts(n int) ([]int, error) {
	// Hold every listener until all are chosen so the kernel cannot hand out one twice.
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	ports := make([]int, 0, n)
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// startupError is a component that failed to start; its message is the single line `up`
// ends with.
type startupError struct {
	component, logPath, reason string
}

func (e *startupError) Error() string {
	return fmt.Sprintf("testbed: %s %s; log: %s", e.component, e.reason, e.logPath)
}

// errInterrupted is returned when start-up is cut short by a signal or the lifeline.
var errInterrupted = errors.New("interrupted")

// waitReady polls check until it succeeds, p exits, ctx ends or timeout passes.
func waitReady(ctx context.Context, p *proc, timeout time.Duration, check func() error) error {
	deadline := time.Now().Add(timeout)
	interval := 50 * time.Millisecond
	for {
		err := check()
		if err == nil {
			return nil
		}
		if p.exited() {
			return &startupError{p.name, p.logPath, "exited during start-up (" + p.exitStatus() + ")"}
		}
		if time.Now().After(deadline) {
			return &startupError{p.name, p.logPath,
				fmt.Sprintf("did not become ready within %.0fs (last check: %v)", timeout.Seconds(), err)}
		}
		select {
		case <-ctx.Done():
			return errInterrupted
		case <-p.done:
		case <-time.After(interval):
		}
		interval = min(interval*2, 500*time.Millisecond)
	}
}

// tlsClient returns an HTTPS client that trusts caFile and, if certFile is set, presents
// that client certificate.
func tlsClient(caFile, certFile, keyFile string) (*http.Client, error) {
	caPEM, err := os.ReadFile(caFile)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, fmt.Errorf("no certificate in %s", caFile)
	}
	cfg := &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	if certFile != "" {
		cert, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return nil, err
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return &http.Client{
		Timeout:   3 * time.Second,
		Transport: &http.Transport{TLSClientConfig: cfg, DisableKeepAlives: true},
	}, nil
}

// expectStatus GETs url and fails unless the response has the wanted status.
func expectStatus(c *http.Client, url string, want int) error {
	resp, err := c.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	if resp.StatusCode != want {
		return fmt.Errorf("GET %s: %s %q", url, resp.Status, body)
	}
	return nil
}
