package main

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"net/http"
	"os"
	"path/filepath"
	"time"
)

const (
	awsTimeout = 60 * time.Second
	// awsEmulatorBinary is the wrapper tests/testbed/build.sh puts into --bin: it runs
	// tests/testbed/aws/emulator.py with the Python venv holding moto.
	awsEmulatorBinary = "aws-emulator"
	awsRegion         = "eu-west-1"
	awsAccountID      = "123456789012"
	awsAudience       = "sts.amazonaws.com"
	awsUser           = "regcred-test"
)

// awsInfo is testbed.json's "aws": the strict ECR + STS emulator and the static identity
// tests sign with.
type awsInfo struct {
	Endpoint        string `json:"endpoint"` // ECR and STS API, http://127.0.0.1:P
	Control         string `json:"control"`  // control endpoint, http://127.0.0.1:Q
	Front           string `json:"front"`    // registry auth front (HTTPS, bed CA), 127.0.0.1:R
	Region          string `json:"region"`
	AccountID       string `json:"accountId"`
	AccessKeyID     string `json:"accessKeyId"`
	SecretAccessKey string `json:"secretAccessKey"`
	IdentityArn     string `json:"identityArn"` // whom the static keys stand for
	Audience        string `json:"audience"`    // what web identity tokens must be issued for
	ECRRegistry     string `json:"ecrRegistry"` // ACCOUNT.dkr.ecr.REGION.amazonaws.com
	ECRImage        string `json:"ecrImage"`    // the test image under that name (pull it via Front)
	LogFile         string `json:"logFile"`
}

// awsEmulatorConfig is the emulator's config file (see tests/testbed/aws/emulator.py).
type awsEmulatorConfig struct {
	Listen               string              `json:"listen"`
	Port                 int                 `json:"port"`
	ControlPort          int                 `json:"controlPort"`
	FrontPort            int                 `json:"frontPort"`
	Region               string              `json:"region"`
	AccountID            string              `json:"accountId"`
	Audience             string              `json:"audience"`
	TokenLifetimeSeconds int                 `json:"tokenLifetimeSeconds"`
	Issuer               string              `json:"issuer"`
	CAFile               string              `json:"caFile"`
	ClientCert           string              `json:"clientCert"`
	ClientKey            string              `json:"clientKey"`
	TLSCert              string              `json:"tlsCert"`
	TLSKey               string              `json:"tlsKey"`
	Registry             awsUpstreamRegistry `json:"registry"`
	Identities           []awsIdentity       `json:"identities"`
}

type awsUpstreamRegistry struct {
	Host     string `json:"host"`
	Username string `json:"username"`
	Password string `json:"password"`
	CAFile   string `json:"caFile"`
}

type awsIdentity struct {
	AccessKeyID     string `json:"accessKeyId"`
	SecretAccessKey string `json:"secretAccessKey"`
	Arn             string `json:"arn"`
}

// launchAWS starts the emulator. It needs the API server's URL (the ServiceAccount issuer)
// and the registry's address and login, but neither to be ready yet: it fetches the
// issuer's keys when it can, and reaches the registry only when a pull comes through.
func (b *bed) launchAWS() (*proc, error) {
	akid, err := randomString("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", 12)
	if err != nil {
		return nil, err
	}
	secret, err := randomString("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/", 40)
	if err != nil {
		return nil, err
	}
	host := "127.0.0.1"
	b.aws = awsInfo{
		Endpoint:        fmt.Sprintf("http://%s:%d", host, b.ports.awsAPI),
		Control:         fmt.Sprintf("http://%s:%d", host, b.ports.awsControl),
		Front:           fmt.Sprintf("%s:%d", host, b.ports.awsFront),
		Region:          awsRegion,
		AccountID:       awsAccountID,
		AccessKeyID:     "AKIA" + akid + "TEST",
		SecretAccessKey: secret,
		IdentityArn:     fmt.Sprintf("arn:aws:iam::%s:user/%s", awsAccountID, awsUser),
		Audience:        awsAudience,
		ECRRegistry:     fmt.Sprintf("%s.dkr.ecr.%s.amazonaws.com", awsAccountID, awsRegion),
		LogFile:         filepath.Join(b.logDir, awsEmulatorBinary+".log"),
	}
	b.aws.ECRImage = b.aws.ECRRegistry + "/" + testImageRepo + ":" + testImageTag
	cfg := awsEmulatorConfig{
		Listen:               host,
		Port:                 b.ports.awsAPI,
		ControlPort:          b.ports.awsControl,
		FrontPort:            b.ports.awsFront,
		Region:               awsRegion,
		AccountID:            awsAccountID,
		Audience:             awsAudience,
		TokenLifetimeSeconds: 43200,
		Issuer:               b.server,
		CAFile:               b.pki.caCert,
		ClientCert:           b.pki.adminCert,
		ClientKey:            b.pki.adminKey,
		TLSCert:              b.pki.registryCert,
		TLSKey:               b.pki.registryKey,
		Registry: awsUpstreamRegistry{
			Host: b.registry.Host, Username: b.registry.Username, Password: b.registry.Password,
			CAFile: b.pki.caCert,
		},
		Identities: []awsIdentity{{b.aws.AccessKeyID, b.aws.SecretAccessKey, b.aws.IdentityArn}},
	}
	data, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		return nil, err
	}
	// It holds the registry password and the static secret key: owner only.
	configPath := b.path("aws-emulator.json")
	if err := os.WriteFile(configPath, data, 0o600); err != nil {
		return nil, err
	}
	return b.startBinary(awsEmulatorBinary, filepath.Join(b.bin, awsEmulatorBinary),
		[]string{"--config", configPath, "--ready-file", b.path("aws-emulator.ready")})
}

// awaitAWS waits for the emulator's ready file and its control endpoint's health check.
func (b *bed) awaitAWS(ctx context.Context, p *proc) error {
	client := &http.Client{Timeout: 2 * time.Second}
	readyFile := b.path("aws-emulator.ready")
	return waitReady(ctx, p, awsTimeout, func() error {
		data, err := os.ReadFile(readyFile)
		if errors.Is(err, os.ErrNotExist) {
			return errors.New("no ready file yet (still importing moto?)")
		} else if err != nil {
			return err
		}
		var ready struct{ Endpoint, Control, Front string }
		if err := json.Unmarshal(data, &ready); err != nil {
			return fmt.Errorf("%s: %v", readyFile, err)
		}
		if ready.Endpoint != b.aws.Endpoint || ready.Control != b.aws.Control || ready.Front != b.aws.Front {
			return fmt.Errorf("listens on %s, %s, %s instead of the ports it was given", ready.Endpoint,
				ready.Control, ready.Front)
		}
		return expectStatus(client, b.aws.Control+"/healthz", 200)
	})
}

// randomString returns n characters drawn uniformly from alphabet.
func randomString(alphabet string, n int) (string, error) {
	out := make([]byte, n)
	for i := range out {
		k, err := rand.Int(rand.Reader, big.NewInt(int64(len(alphabet))))
		if err != nil {
			return "", err
		}
		out[i] = alphabet[k.Int64()]
	}
	return string(out), nil
}
