package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"time"
)

const etcdTimeout = 30 * time.Second

// launchEtcd starts a single-member etcd on two loopback ports.
func (b *bed) launchEtcd() (*proc, error) {
	client := fmt.Sprintf("http://127.0.0.1:%d", b.ports.etcdClient)
	peer := fmt.Sprintf("http://127.0.0.1:%d", b.ports.etcdPeer)
	args := []string{
		"--name=testbed",
		"--data-dir=" + b.path("etcd"),
		"--listen-client-urls=" + client,
		"--advertise-client-urls=" + client,
		"--listen-peer-urls=" + peer,
		"--initial-advertise-peer-urls=" + peer,
		"--initial-cluster=testbed=" + peer,
		// The data lives only as long as one test run, and fsync dominates write latency.
		"--unsafe-no-fsync",
	}
	b.etcdURL = client
	return b.start("etcd", args)
}

// awaitEtcd waits until etcd reports itself healthy.
func (b *bed) awaitEtcd(ctx context.Context, p *proc) error {
	c := &http.Client{Timeout: 2 * time.Second}
	return waitReady(ctx, p, etcdTimeout, func() error {
		resp, err := c.Get(b.etcdURL + "/health")
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		var h struct {
			Health string `json:"health"`
		}
		if err := json.NewDecoder(resp.Body).Decode(&h); err != nil {
			return fmt.Errorf("GET /health: %s: %v", resp.Status, err)
		}
		if h.Health != "true" {
			return fmt.Errorf("GET /health: %s, health=%q", resp.Status, h.Health)
		}
		return nil
	})
}
