package main

import (
	"bytes"
	"context"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"time"

	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// nodeBinaries are the binaries --node expects in --bin.
var nodeBinaries = []string{
	"kubelet", "kube-proxy", "kube-scheduler", "containerd", "containerd-shim-runc-v2", "ctr", "crictl",
	pauseBinary, idleBinary,
}

// apiserverKubeletClientUser is who the API server is to kubelet (logs, exec, port-forward).
const apiserverKubeletClientUser = "kube-apiserver-kubelet-client"

// nodeCerts are the node's certificates, issued by the bed's CA.
type nodeCerts struct {
	kubeletClient, kubeletServing, proxy, scheduler, apiserverClient [2]string // cert, key
}

// nodeAPIServerArgs are the API server's extra flags with a node: it advertises the bridge's
// gateway (the kubernetes Service's endpoint, relayed to loopback by the forwarder) and
// talks to kubelet with a client certificate of its own.
func (b *bed) nodeAPIServerArgs() []string {
	if b.node == nil {
		return nil
	}
	cert, key := b.nodePath("pki", "apiserver-kubelet-client.crt"), b.nodePath("pki", "apiserver-kubelet-client.key")
	return []string{
		"--advertise-address=" + nodeGateway,
		"--endpoint-reconciler-type=lease",
		"--kubelet-client-certificate=" + cert,
		"--kubelet-client-key=" + key,
		"--kubelet-certificate-authority=" + b.pki.caCert,
		"--kubelet-preferred-address-types=Hostname",
	}
}

// issueNodeCerts issues the node's certificates. The API server's kubelet client is issued
// first (by prepareNodeCerts) since the API server starts before the node.
func (b *bed) issueNodeCerts() (*nodeCerts, error) {
	ca, err := loadCA(b.pki.caCert, b.pki.caKey)
	if err != nil {
		return nil, err
	}
	dir := b.nodePath("pki")
	loopback := []net.IP{net.IPv4(127, 0, 0, 1)}
	c := &nodeCerts{}
	for _, l := range []struct {
		name string
		spec certSpec
		out  *[2]string
	}{
		{"kubelet-client", certSpec{commonName: "system:node:" + nodeName, orgs: []string{"system:nodes"}}, &c.kubeletClient},
		{"kubelet-serving", certSpec{commonName: "system:node:" + nodeName, ips: loopback, dnsNames: []string{"localhost"}, server: true}, &c.kubeletServing},
		{"kube-proxy", certSpec{commonName: "system:kube-proxy"}, &c.proxy},
		{"kube-scheduler", certSpec{commonName: "system:kube-scheduler"}, &c.scheduler},
	} {
		kp, err := ca.issue(l.spec)
		if err != nil {
			return nil, fmt.Errorf("issuing the %s certificate: %w", l.name, err)
		}
		if l.out[0], l.out[1], err = writeKeyPair(dir, l.name, kp); err != nil {
			return nil, err
		}
	}
	return c, nil
}

// prepareNodeCerts issues the API server's kubelet client certificate (before it starts).
func (b *bed) prepareNodeCerts() error {
	if b.node == nil {
		return nil
	}
	ca, err := loadCA(b.pki.caCert, b.pki.caKey)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(b.nodePath("pki"), 0o700); err != nil {
		return err
	}
	kp, err := ca.issue(certSpec{commonName: apiserverKubeletClientUser})
	if err != nil {
		return err
	}
	_, _, err = writeKeyPair(b.nodePath("pki"), "apiserver-kubelet-client", kp)
	return err
}

// loadCA reads the bed's CA back from its files.
func loadCA(certPath, keyPath string) (*keyPair, error) {
	pair, err := tls.LoadX509KeyPair(certPath, keyPath)
	if err != nil {
		return nil, err
	}
	data, err := os.ReadFile(certPath)
	if err != nil {
		return nil, err
	}
	block, _ := pem.Decode(data)
	if block == nil {
		return nil, fmt.Errorf("no certificate in %s", certPath)
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return nil, err
	}
	key, ok := pair.PrivateKey.(crypto.Signer)
	if !ok {
		return nil, errors.New("the CA key cannot sign")
	}
	return &keyPair{cert: cert, key: key}, nil
}

// launchKubelet starts kubelet as Node 127.0.0.1. Its settings fit these machines: cgroup
// v1 with the cgroupfs driver (no systemd), swap allowed, state under the bed's directory,
// no iptables chains of its own, and no eviction or image GC that a full test disk could
// trigger mid-test.
func (b *bed) launchKubelet(certs *nodeCerts) (*proc, error) {
	dir := b.nodePath("kubelet")
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, err
	}
	kubeconfig := b.nodePath("kubelet.kubeconfig")
	if err := writeKubeconfig(kubeconfig, b.server, b.pki.caCert, "kubelet",
		certs.kubeletClient[0], certs.kubeletClient[1]); err != nil {
		return nil, err
	}
	n := b.node
	config := map[string]any{
		"apiVersion":         "kubelet.config.k8s.io/v1beta1",
		"kind":               "KubeletConfiguration",
		"address":            "127.0.0.1",
		"port":               n.ports.kubelet,
		"readOnlyPort":       0,
		"healthzBindAddress": "127.0.0.1",
		"healthzPort":        n.ports.kubeletHealthz,
		"tlsCertFile":        certs.kubeletServing[0],
		"tlsPrivateKeyFile":  certs.kubeletServing[1],
		"authentication": map[string]any{
			"anonymous": map[string]any{"enabled": false},
			"webhook":   map[string]any{"enabled": true},
			"x509":      map[string]any{"clientCAFile": b.pki.caCert},
		},
		"authorization":            map[string]any{"mode": "Webhook"},
		"containerRuntimeEndpoint": "unix://" + n.record.Containerd,
		"failCgroupV1":             false,
		"cgroupDriver":             "cgroupfs",
		"cgroupRoot":               "/" + nodeCgroup,
		"failSwapOn":               false,
		"podLogsDir":               b.nodePath("pod-logs"),
		"makeIPTablesUtilChains":   false,
		"protectKernelDefaults":    false,
		"hairpinMode":              "none",
		"resolvConf":               "",
		"serializeImagePulls":      false,
		"evictionHard": map[string]string{
			"memory.available": "100Mi", "nodefs.available": "1%", "imagefs.available": "1%",
			"nodefs.inodesFree": "1%",
		},
		"imageGCHighThresholdPercent": 100,
		"imageGCLowThresholdPercent":  99,
		"shutdownGracePeriod":         "0s",
		"nodeStatusUpdateFrequency":   "2s",
		"syncFrequency":               "10s",
		"fileCheckFrequency":          "20s",
		"staticPodPath":               "",
	}
	data, err := json.MarshalIndent(config, "", "  ")
	if err != nil {
		return nil, err
	}
	configPath := b.nodePath("kubelet.json")
	if err := os.WriteFile(configPath, data, 0o644); err != nil {
		return nil, err
	}
	return b.start("kubelet", []string{
		"--config=" + configPath,
		"--kubeconfig=" + kubeconfig,
		"--root-dir=" + dir,
		"--cert-dir=" + b.nodePath("kubelet-pki"),
		"--hostname-override=" + nodeName,
		// The bridge's address: a Node address that is not loopback, and the bed's own.
		"--node-ip=" + nodeGateway,
	})
}

// awaitKubelet waits until the Node is Ready.
func (b *bed) awaitKubelet(ctx context.Context, p *proc) error {
	return waitReady(ctx, p, nodeTimeout, func() error {
		resp, err := b.admin.Get(b.server + "/api/v1/nodes/" + nodeName)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("GET node %s: %s", nodeName, resp.Status)
		}
		var node struct {
			Status struct {
				Conditions []struct{ Type, Status, Reason, Message string } `json:"conditions"`
			} `json:"status"`
		}
		if err := json.NewDecoder(resp.Body).Decode(&node); err != nil {
			return err
		}
		for _, c := range node.Status.Conditions {
			if c.Type == "Ready" {
				if c.Status == "True" {
					return nil
				}
				return fmt.Errorf("Node %s not Ready: %s %s", nodeName, c.Reason, c.Message)
			}
		}
		return fmt.Errorf("Node %s has no Ready condition yet", nodeName)
	})
}

// launchKubeProxy starts kube-proxy (iptables) so Pods reach Services, the kubernetes
// Service first. It leaves the host's conntrack sysctls alone and serves NodePorts only
// on the bed's bridge.
func (b *bed) launchKubeProxy(certs *nodeCerts) (*proc, error) {
	kubeconfig := b.nodePath("kube-proxy.kubeconfig")
	if err := writeKubeconfig(kubeconfig, b.server, b.pki.caCert, "kube-proxy",
		certs.proxy[0], certs.proxy[1]); err != nil {
		return nil, err
	}
	n := b.node
	config := map[string]any{
		"apiVersion":         "kubeproxy.config.k8s.io/v1alpha1",
		"kind":               "KubeProxyConfiguration",
		"mode":               "iptables",
		"clientConnection":   map[string]any{"kubeconfig": kubeconfig},
		"hostnameOverride":   nodeName,
		"bindAddress":        "127.0.0.1",
		"healthzBindAddress": fmt.Sprintf("127.0.0.1:%d", n.ports.proxyHealthz),
		"metricsBindAddress": fmt.Sprintf("127.0.0.1:%d", n.ports.proxyMetrics),
		"clusterCIDR":        nodePodCIDR,
		"nodePortAddresses":  []string{nodePodCIDR},
		"conntrack": map[string]any{
			"maxPerCore": 0, "min": 0, "tcpEstablishedTimeout": "0s", "tcpCloseWaitTimeout": "0s",
		},
		"iptables": map[string]any{"localhostNodePorts": false, "masqueradeAll": false},
	}
	data, err := json.MarshalIndent(config, "", "  ")
	if err != nil {
		return nil, err
	}
	configPath := b.nodePath("kube-proxy.json")
	if err := os.WriteFile(configPath, data, 0o644); err != nil {
		return nil, err
	}
	return b.start("kube-proxy", []string{"--config=" + configPath})
}

// awaitKubeProxy waits until kube-proxy's health check passes (after its first sync).
func (b *bed) awaitKubeProxy(ctx context.Context, p *proc) error {
	client := &http.Client{Timeout: 2 * time.Second}
	url := fmt.Sprintf("http://127.0.0.1:%d/healthz", b.node.ports.proxyHealthz)
	return waitReady(ctx, p, nodeTimeout, func() error { return expectStatus(client, url, 200) })
}

// launchScheduler starts kube-scheduler, so that Pods without nodeName get the node.
func (b *bed) launchScheduler(certs *nodeCerts) (*proc, error) {
	kubeconfig := b.nodePath("kube-scheduler.kubeconfig")
	if err := writeKubeconfig(kubeconfig, b.server, b.pki.caCert, "kube-scheduler",
		certs.scheduler[0], certs.scheduler[1]); err != nil {
		return nil, err
	}
	return b.start("kube-scheduler", []string{
		"--kubeconfig=" + kubeconfig,
		"--authentication-kubeconfig=" + kubeconfig,
		"--authorization-kubeconfig=" + kubeconfig,
		"--leader-elect=false",
		"--bind-address=127.0.0.1",
		fmt.Sprintf("--secure-port=%d", b.node.ports.scheduler),
		"--cert-dir=" + b.nodePath("kube-scheduler-pki"),
	})
}

// awaitScheduler waits for kube-scheduler's health check (its serving certificate is
// self-signed; the check reads nothing secret).
func (b *bed) awaitScheduler(ctx context.Context, p *proc) error {
	client := &http.Client{
		Timeout:   2 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}, //nolint:gosec
	}
	url := fmt.Sprintf("https://127.0.0.1:%d/healthz", b.node.ports.scheduler)
	return waitReady(ctx, p, nodeTimeout, func() error { return expectStatus(client, url, 200) })
}

// bindClusterRole binds a user to a ClusterRole.
func (b *bed) bindClusterRole(name, role, user string) error {
	binding := rbacv1.ClusterRoleBinding{
		TypeMeta:   metav1.TypeMeta{APIVersion: "rbac.authorization.k8s.io/v1", Kind: "ClusterRoleBinding"},
		ObjectMeta: metav1.ObjectMeta{Name: name},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: role},
		Subjects:   []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: rbacv1.UserKind, Name: user}},
	}
	body, err := json.Marshal(binding)
	if err != nil {
		return err
	}
	resp, err := b.admin.Post(b.server+"/apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
		"application/json", bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("binding %s to %s: %w", user, role, err)
	}
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		return fmt.Errorf("binding %s to %s: %s %s", user, role, resp.Status, msg)
	}
	return nil
}
