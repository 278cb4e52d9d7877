package main

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// pki holds the paths of every certificate and key the test bed uses.
type pki struct {
	dir                                  string
	caCert, caKey                        string
	apiserverCert, apiserverKey          string
	adminCert, adminKey                  string
	kcmCert, kcmKey                      string
	registryCert, registryKey            string
	serviceAccountKey, serviceAccountPub string
}

// certSpec describes a leaf certificate to issue.
type certSpec struct {
	commonName string
	orgs       []string
	dnsNames   []string
	ips        []net.IP
	server     bool // serving certificate; otherwise a client certificate
}

// keyPair is a certificate with its private key.
type keyPair struct {
	cert *x509.Certificate
	key  crypto.Signer
}

// makePKI writes a fresh CA and every certificate the test bed needs into dir. ECDSA P-256
// keeps generation instant; the ServiceAccount key is RSA, the most widely supported
// signing algorithm for tokens.
func makePKI(dir string) (*pki, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	p := &pki{dir: dir}
	ca, err := newCA("regcred-testbed-ca")
	if err != nil {
		return nil, err
	}
	if p.caCert, p.caKey, err = writeKeyPair(dir, "ca", ca); err != nil {
		return nil, err
	}
	loopback := []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}
	leaves := []struct {
		name      string
		spec      certSpec
		cert, key *string
	}{
		{"apiserver", certSpec{
			commonName: "kube-apiserver",
			dnsNames:   []string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc"},
			// Pods reach it as the kubernetes Service, through the node's bridge (node.go).
			ips:    append(loopback, net.ParseIP(nodeServiceIP), net.ParseIP(nodeGateway)),
			server: true,
		}, &p.apiserverCert, &p.apiserverKey},
		{"admin", certSpec{commonName: "regcred-admin", orgs: []string{"system:masters"}}, &p.adminCert, &p.adminKey},
		{"kube-controller-manager", certSpec{commonName: "system:kube-controller-manager"}, &p.kcmCert, &p.kcmKey},
		{"registry", certSpec{
			commonName: "regcred-testbed-registry",
			dnsNames:   []string{"localhost"},
			ips:        loopback,
			server:     true,
		}, &p.registryCert, &p.registryKey},
	}
	for _, l := range leaves {
		kp, err := ca.issue(l.spec)
		if err != nil {
			return nil, fmt.Errorf("issuing the %s certificate: %w", l.name, err)
		}
		if *l.cert, *l.key, err = writeKeyPair(dir, l.name, kp); err != nil {
			return nil, err
		}
	}
	if p.serviceAccountKey, p.serviceAccountPub, err = writeServiceAccountKeys(dir); err != nil {
		return nil, err
	}
	return p, nil
}

func newCA(name string) (*keyPair, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl, err := baseTemplate(name)
	if err != nil {
		return nil, err
	}
	tmpl.IsCA = true
	tmpl.BasicConstraintsValid = true
	tmpl.KeyUsage = x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &keyPair{cert: cert, key: key}, nil
}

// issue signs a new leaf certificate with the CA.
func (ca *keyPair) issue(spec certSpec) (*keyPair, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl, err := baseTemplate(spec.commonName)
	if err != nil {
		return nil, err
	}
	tmpl.Subject.Organization = spec.orgs
	tmpl.DNSNames = spec.dnsNames
	tmpl.IPAddresses = spec.ips
	tmpl.KeyUsage = x509.KeyUsageDigitalSignature
	tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	if spec.server {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, key.Public(), ca.key)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &keyPair{cert: cert, key: key}, nil
}

func baseTemplate(cn string) (*x509.Certificate, error) {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, err
	}
	now := time.Now()
	return &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: cn},
		// Back-dated so a slightly skewed clock in a child does not reject it.
		NotBefore: now.Add(-time.Hour),
		NotAfter:  now.Add(365 * 24 * time.Hour),
	}, nil
}

// writeKeyPair writes NAME.crt and NAME.key (PKCS#8) into dir and returns their paths.
func writeKeyPair(dir, name string, kp *keyPair) (certPath, keyPath string, err error) {
	keyDER, err := x509.MarshalPKCS8PrivateKey(kp.key)
	if err != nil {
		return "", "", err
	}
	certPath = filepath.Join(dir, name+".crt")
	keyPath = filepath.Join(dir, name+".key")
	if err := writePEM(certPath, "CERTIFICATE", kp.cert.Raw, 0o644); err != nil {
		return "", "", err
	}
	if err := writePEM(keyPath, "PRIVATE KEY", keyDER, 0o600); err != nil {
		return "", "", err
	}
	return certPath, keyPath, nil
}

// writeServiceAccountKeys writes the RSA key pair the API server signs and verifies
// ServiceAccount tokens with.
func writeServiceAccountKeys(dir string) (keyPath, pubPath string, err error) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return "", "", err
	}
	pubDER, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		return "", "", err
	}
	keyPath = filepath.Join(dir, "sa.key")
	pubPath = filepath.Join(dir, "sa.pub")
	if err := writePEM(keyPath, "RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(key), 0o600); err != nil {
		return "", "", err
	}
	if err := writePEM(pubPath, "PUBLIC KEY", pubDER, 0o644); err != nil {
		return "", "", err
	}
	return keyPath, pubPath, nil
}

func writePEM(path, blockType string, der []byte, mode os.FileMode) error {
	return os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: blockType, Bytes: der}), mode)
}
