package apiserver

import (
	"fmt"
	"os"
	"path/filepath"

	"gopkg.in/natefinch/lumberjack.v2"
	auditinternal "k8s.io/apiserver/pkg/apis/audit"
	auditv1 "k8s.io/apiserver/pkg/apis/audit/v1"
	"k8s.io/apiserver/pkg/audit"
	"k8s.io/apiserver/pkg/audit/policy"
	auditlog "k8s.io/apiserver/plugin/pkg/audit/log"
)

// AuditConfig says where the audit log goes.
type AuditConfig struct {
	// Path is the JSON-lines audit log file. If empty, nothing is audited.
	Path string
	// MaxSizeMB rotates the file when it grows past this size. If 0, 100.
	MaxSizeMB int
	// MaxBackups is how many rotated files are kept. If 0, 5.
	MaxBackups int
}

// newAudit returns the audit backend and policy: every request is recorded
// once, when its response is complete (watches also when they start), at
// Metadata level — who, what,
// which object, the result, source IPs and user agent, never a request or
// response body, so no secret value or token reaches the log.
func newAudit(cfg AuditConfig) (audit.Backend, audit.PolicyRuleEvaluator, error) {
	if cfg.Path == "" {
		return nil, nil, nil
	}
	if cfg.MaxSizeMB == 0 {
		cfg.MaxSizeMB = 100
	}
	if cfg.MaxBackups == 0 {
		cfg.MaxBackups = 5
	}
	if err := os.MkdirAll(filepath.Dir(cfg.Path), 0o700); err != nil {
		return nil, nil, fmt.Errorf("apiserver: audit log directory (--audit-log-path): %w", err)
	}
	// Create the file with owner-only permissions before the rotating writer
	// opens it.
	f, err := os.OpenFile(cfg.Path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, nil, fmt.Errorf("apiserver: open audit log (--audit-log-path): %w", err)
	}
	f.Close()
	out := newAuditWriter(&lumberjack.Logger{Filename: cfg.Path, MaxSize: cfg.MaxSizeMB, MaxBackups: cfg.MaxBackups, Compress: false})
	backend := closingBackend{auditlog.NewBackend(out, auditlog.FormatJson, auditv1.SchemeGroupVersion), out}
	p := &auditinternal.Policy{
		// ResponseStarted stays: failed authentications are recorded at
		// that stage (and long-running requests such as watches get a line
		// when they start as well as when they end).
		OmitStages: []auditinternal.Stage{auditinternal.StageRequestReceived},
		Rules:      []auditinternal.PolicyRule{{Level: auditinternal.LevelMetadata}},
	}
	return backend, policy.NewPolicyRuleEvaluator(p), nil
}

// closingBackend closes the audit writer, writing what it holds, when the
// server shuts its audit backend down.
type closingBackend struct {
	audit.Backend
	out *auditWriter
}

func (b closingBackend) Shutdown() {
	b.Backend.Shutdown()
	_ = b.out.Close()
}
