package e2e

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// kubectlRequest is one HTTP request kubectl reported at -v=6.
type kubectlRequest struct {
	method     string
	requestURI string
	code       int
	command    string
}

// kubectl -v=6 logs every round trip; older releases as
// `GET https://host/path?q 200 OK in 1 milliseconds`, newer ones as
// structured `"Response" verb="GET" url="https://…" status="200 OK"`.
var (
	roundTripPlain      = regexp.MustCompile(`round_trippers\.go:\d+\] (GET|POST|PUT|PATCH|DELETE|HEAD) (https://\S+) (\d{3}) `)
	roundTripStructured = regexp.MustCompile(`verb="(\w+)" url="(https://[^"]+)" status="(\d{3})`)
)

// authSession runs kubectl at -v=6 against one server and records every
// request kubectl made, so that the audit log can be checked against them.
type authSession struct {
	s        *server
	requests []kubectlRequest
}

// kubectl runs kubectl with args (at -v=6) and records its requests.
func (a *authSession) kubectl(t *testing.T, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	stdout, stderr, err = a.s.kubectl(t, append([]string{"-v=6"}, args...)...)
	command := strings.Join(args, " ")
	n := 0
	sc := bufio.NewScanner(strings.NewReader(stderr))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		m := roundTripPlain.FindStringSubmatch(sc.Text())
		if m == nil {
			m = roundTripStructured.FindStringSubmatch(sc.Text())
		}
		if m == nil {
			continue
		}
		u, perr := url.Parse(m[2])
		if perr != nil {
			t.Fatalf("kubectl %s: request URL %q: %v", command, m[2], perr)
		}
		code, _ := strconv.Atoi(m[3])
		a.requests = append(a.requests, kubectlRequest{method: m[1], requestURI: u.RequestURI(), code: code, command: command})
		n++
	}
	if n == 0 {
		t.Fatalf("kubectl -v=6 %s: no request found in its log; cannot check the audit log against it\nstderr: %s", command, clip(stderr))
	}
	return stdout, stderr, err
}

// must is kubectl that fails the test on a non-zero exit.
func (a *authSession) must(t *testing.T, args ...string) string {
	t.Helper()
	out, errOut, err := a.kubectl(t, args...)
	if err != nil {
		t.Fatalf("kubectl %s: %v\nstderr: %s", strings.Join(args, " "), err, clip(errOut))
	}
	return out
}

// canI runs `kubectl auth can-i` and returns its yes/no answer (it exits
// 1 on "no").
func (a *authSession) canI(t *testing.T, args ...string) string {
	t.Helper()
	out, errOut, err := a.kubectl(t, append([]string{"auth", "can-i"}, args...)...)
	answer := strings.TrimSpace(out)
	if answer != "yes" && answer != "no" {
		t.Fatalf("kubectl auth can-i %s = %q (err %v), want yes or no\nstderr: %s", strings.Join(args, " "), answer, err, clip(errOut))
	}
	return answer
}

// tokenKubeconfig writes a kubeconfig for the admin kubeconfig's cluster
// that authenticates with token only (no client certificate, which would
// take precedence).
func tokenKubeconfig(t *testing.T, admin, path, token string) string {
	t.Helper()
	cfg, err := clientcmd.LoadFromFile(admin)
	if err != nil {
		t.Fatalf("load %s: %v", admin, err)
	}
	cluster := cfg.Clusters[cfg.Contexts[cfg.CurrentContext].Cluster]
	out := clientcmdapi.NewConfig()
	out.Clusters["tether"] = cluster
	out.AuthInfos["token"] = &clientcmdapi.AuthInfo{Token: token}
	out.Contexts["token"] = &clientcmdapi.Context{Cluster: "tether", AuthInfo: "token", Namespace: "default"}
	out.CurrentContext = "token"
	if err := clientcmd.WriteToFile(*out, path); err != nil {
		t.Fatalf("write %s: %v", path, err)
	}
	return path
}

// jwtLifetime returns exp-iat of a JWT, without verifying it.
func jwtLifetime(t *testing.T, token string) time.Duration {
	t.Helper()
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		t.Fatalf("token has %d parts, want 3 (a JWT)", len(parts))
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatalf("token payload: %v", err)
	}
	var claims struct {
		Exp int64 `json:"exp"`
		Iat int64 `json:"iat"`
	}
	if err := json.Unmarshal(payload, &claims); err != nil {
		t.Fatalf("token claims: %v", err)
	}
	return time.Duration(claims.Exp-claims.Iat) * time.Second
}

func randomHex(t *testing.T, n int) string {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// auditEvent is the part of an audit.k8s.io/v1 Event the test checks.
type auditEvent struct {
	Kind       string `json:"kind"`
	APIVersion string `json:"apiVersion"`
	Level      string `json:"level"`
	AuditID    string `json:"auditID"`
	Stage      string `json:"stage"`
	RequestURI string `json:"requestURI"`
	Verb       string `json:"verb"`
	User       struct {
		Username string   `json:"username"`
		Groups   []string `json:"groups"`
	} `json:"user"`
	ImpersonatedUser *struct {
		Username string `json:"username"`
	} `json:"impersonatedUser"`
	SourceIPs      []string `json:"sourceIPs"`
	UserAgent      string   `json:"userAgent"`
	ResponseStatus *struct {
		Code int `json:"code"`
	} `json:"responseStatus"`
	RequestObject  json.RawMessage `json:"requestObject"`
	ResponseObject json.RawMessage `json:"responseObject"`
}

// TestAuthKubectl drives authentication and authorization with the real
// kubectl — whoami, can-i, create token, roles and bindings, a 403 and a
// 401 — and then checks the server's audit log against every request
// kubectl reported: one line per request, and no token or
// secret value anywhere in the file.
func TestAuthKubectl(t *testing.T) {
	kubectlPath(t)
	s := startServer(t)
	a := &authSession{s: s}
	dir := t.TempDir()
	const saUser = "system:serviceaccount:default:viewer"
	secretValue := "audit-probe-" + randomHex(t, 16)

	// The admin's certificate user.
	if got := a.must(t, "auth", "whoami", "-o", "jsonpath={.status.userInfo.username}"); got != "admin" {
		t.Errorf("kubectl auth whoami (admin kubeconfig) = %q, want admin", got)
	}
	if out := a.must(t, "auth", "whoami"); !strings.Contains(out, "system:masters") {
		t.Errorf("kubectl auth whoami (admin kubeconfig): no system:masters group in\n%s", out)
	}

	// The acceptance flow: a service account bound to view, and its token.
	a.must(t, "create", "serviceaccount", "viewer")
	a.must(t, "create", "rolebinding", "viewer-view", "--clusterrole=view", "--serviceaccount=default:viewer")
	token := strings.TrimSpace(a.must(t, "create", "token", "viewer", "--duration=10m"))
	if got := jwtLifetime(t, token); got != 10*time.Minute {
		t.Errorf("kubectl create token --duration=10m: token lifetime (exp-iat) = %v, want 10m", got)
	}
	a.must(t, "create", "secret", "generic", "audit-probe", "--from-literal=value="+secretValue)
	if got := a.must(t, "get", "secret", "audit-probe", "-o", "jsonpath={.data.value}"); got != base64.StdEncoding.EncodeToString([]byte(secretValue)) {
		t.Errorf("audit-probe .data.value = %q, want the base64 of the value", got)
	}
	tok := tokenKubeconfig(t, s.Kubeconfig, filepath.Join(dir, "viewer.kubeconfig"), token)

	if got := a.must(t, "--kubeconfig", tok, "auth", "whoami", "-o", "jsonpath={.status.userInfo.username}"); got != saUser {
		t.Errorf("kubectl auth whoami (viewer token) = %q, want %s", got, saUser)
	}
	a.must(t, "--kubeconfig", tok, "get", "pods")
	_, errOut, err := a.kubectl(t, "--kubeconfig", tok, "get", "secrets")
	want403 := `User "` + saUser + `" cannot list resource "secrets" in API group "" in the namespace "default"`
	if err == nil || !strings.Contains(errOut, "Forbidden") || !strings.Contains(errOut, want403) {
		t.Errorf("kubectl get secrets (viewer token): err %v, stderr does not say Forbidden and %q:\n%s", err, want403, clip(errOut))
	}

	// auth can-i: as the token user, with --list, and with --as.
	if got := a.canI(t, "--kubeconfig", tok, "list", "pods"); got != "yes" {
		t.Errorf("kubectl auth can-i list pods (viewer token) = %s, want yes", got)
	}
	if got := a.canI(t, "--kubeconfig", tok, "list", "secrets"); got != "no" {
		t.Errorf("kubectl auth can-i list secrets (viewer token) = %s, want no", got)
	}
	if got := a.canI(t, "--kubeconfig", tok, "create", "configmaps"); got != "no" {
		t.Errorf("kubectl auth can-i create configmaps (viewer token) = %s, want no", got)
	}
	list := a.must(t, "--kubeconfig", tok, "auth", "can-i", "--list")
	if row := rowOf(list, "pods"); len(row) == 0 || !strings.Contains(strings.Join(row, " "), "list") {
		t.Errorf("kubectl auth can-i --list (viewer token): no pods row with list:\n%s", list)
	}
	if row := rowOf(list, "secrets"); len(row) != 0 {
		t.Errorf("kubectl auth can-i --list (viewer token): a secrets row %v, want none:\n%s", row, list)
	}
	if got := a.canI(t, "list", "pods", "--as="+saUser); got != "yes" {
		t.Errorf("kubectl auth can-i list pods --as=%s = %s, want yes", saUser, got)
	}
	if got := a.canI(t, "get", "secrets", "--as="+saUser); got != "no" {
		t.Errorf("kubectl auth can-i get secrets --as=%s = %s, want no", saUser, got)
	}
	if got := a.canI(t, "*", "*"); got != "yes" {
		t.Errorf("kubectl auth can-i '*' '*' (admin) = %s, want yes", got)
	}
	if out := a.must(t, "auth", "can-i", "--list", "--as="+saUser); rowOf(out, "pods") == nil {
		t.Errorf("kubectl auth can-i --list --as=%s: no pods row:\n%s", saUser, out)
	}
	if got := a.must(t, "auth", "whoami", "--as="+saUser, "-o", "jsonpath={.status.userInfo.username}"); got != saUser {
		t.Errorf("kubectl auth whoami --as=%s = %q", saUser, got)
	}

	// create role / rolebinding, then act as the bound user.
	if out := a.must(t, "create", "role", "pod-reader", "--verb=get,list,watch", "--resource=pods"); !strings.Contains(out, "role.rbac.authorization.k8s.io/pod-reader created") {
		t.Errorf("kubectl create role = %q", out)
	}
	if out := a.must(t, "create", "rolebinding", "alice-pod-reader", "--role=pod-reader", "--user=alice"); !strings.Contains(out, "rolebinding.rbac.authorization.k8s.io/alice-pod-reader created") {
		t.Errorf("kubectl create rolebinding = %q", out)
	}
	if err := eventually(5*time.Second, 200*time.Millisecond, func() error {
		if got := a.canI(t, "list", "pods", "--as=alice"); got != "yes" {
			return fmt.Errorf("kubectl auth can-i list pods --as=alice = %s, want yes", got)
		}
		return nil
	}); err != nil {
		t.Error(err)
	}
	if got := a.canI(t, "list", "secrets", "--as=alice"); got != "no" {
		t.Errorf("kubectl auth can-i list secrets --as=alice = %s, want no", got)
	}
	a.must(t, "get", "pods", "--as=alice")
	_, errOut, err = a.kubectl(t, "delete", "secret", "audit-probe", "--as=alice", "-n", "default")
	wantAlice := `User "alice" cannot delete resource "secrets" in API group "" in the namespace "default"`
	if err == nil || !strings.Contains(errOut, wantAlice) {
		t.Errorf("kubectl delete secret --as=alice: err %v, stderr does not say %q:\n%s", err, wantAlice, clip(errOut))
	}

	// A bootstrap token, used through kubectl.
	bootstrapSecret := randomHex(t, 8) // 16 characters of [0-9a-f]
	bootstrapToken := "e2eabc." + bootstrapSecret
	a.must(t, "create", "secret", "generic", "bootstrap-token-e2eabc", "-n", "kube-system",
		"--type=bootstrap.kubernetes.io/token",
		"--from-literal=token-id=e2eabc", "--from-literal=token-secret="+bootstrapSecret,
		"--from-literal=usage-bootstrap-authentication=true",
		"--from-literal=expiration="+time.Now().Add(time.Hour).UTC().Format(time.RFC3339))
	boot := tokenKubeconfig(t, s.Kubeconfig, filepath.Join(dir, "bootstrap.kubeconfig"), bootstrapToken)
	if got := a.must(t, "--kubeconfig", boot, "auth", "whoami", "-o", "jsonpath={.status.userInfo.username}"); got != "system:bootstrap:e2eabc" {
		t.Errorf("kubectl auth whoami (bootstrap token) = %q, want system:bootstrap:e2eabc", got)
	}

	// Deleting the service account kills its token (verified tokens are
	// cached for at most 10 s).
	a.must(t, "delete", "serviceaccount", "viewer")
	deleted := time.Now()
	if err := eventually(15*time.Second, 500*time.Millisecond, func() error {
		_, errOut, err := a.kubectl(t, "--kubeconfig", tok, "get", "pods")
		if err == nil || !strings.Contains(errOut, "Unauthorized") {
			return fmt.Errorf("kubectl get pods with the deleted service account's token: err %v, stderr %s", err, clip(errOut))
		}
		return nil
	}); err != nil {
		t.Errorf("token still accepted 15s after kubectl delete sa viewer: %v", err)
	} else {
		t.Logf("token refused %.1fs after the service account was deleted", time.Since(deleted).Seconds())
	}

	checkAuditLog(t, filepath.Join(s.dataDir, "audit.log"), a.requests, map[string]string{
		"service-account token":  token,
		"token signature":        token[strings.LastIndex(token, ".")+1:],
		"bootstrap token secret": bootstrapSecret,
		"secret value":           secretValue,
		"secret value (base64)":  base64.StdEncoding.EncodeToString([]byte(secretValue)),
	}, saUser)
}

// checkAuditLog checks that every line of the audit log is a Metadata-level
// audit.k8s.io/v1 Event at stage ResponseComplete (failed authentications
// and the start of watches are recorded at ResponseStarted), that every request
// kubectl reported has its own line (same requestURI and response code,
// user agent kubectl), and that none of the secrets appears in the file.
func checkAuditLog(t *testing.T, path string, requests []kubectlRequest, secrets map[string]string, saUser string) {
	t.Helper()
	// A request's line is written just after its response: give the last
	// ones a moment to reach the file.
	var data []byte
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		var err error
		if data, err = os.ReadFile(path); err != nil {
			t.Fatalf("audit log: %v", err)
		}
		if bytes.Count(data, []byte(`"userAgent":"kubectl`)) >= len(requests) || time.Now().After(deadline) {
			break
		}
	}
	for what, v := range secrets {
		if v != "" && bytes.Contains(data, []byte(v)) {
			t.Errorf("audit log %s contains the %s", path, what)
		}
	}

	type key struct {
		uri  string
		code int
	}
	available := map[key]int{}
	lines, kubectlLines := 0, 0
	var saw403, sawImpersonation bool
	for i, line := range bytes.Split(bytes.TrimSpace(data), []byte("\n")) {
		lines++
		var ev auditEvent
		if err := json.Unmarshal(line, &ev); err != nil {
			t.Errorf("audit log line %d is not JSON: %v\n%s", i+1, err, line)
			continue
		}
		if ev.Kind != "Event" || ev.APIVersion != "audit.k8s.io/v1" || ev.Level != "Metadata" ||
			(ev.Stage != "ResponseComplete" && ev.Stage != "ResponseStarted") {
			t.Errorf("audit log line %d: kind %q apiVersion %q stage %q level %q, want Event audit.k8s.io/v1 ResponseComplete (or ResponseStarted) Metadata",
				i+1, ev.Kind, ev.APIVersion, ev.Stage, ev.Level)
		}
		if ev.Stage == "ResponseStarted" && ev.ResponseStatus == nil {
			// A long-running request (a watch) starting; its
			// ResponseComplete line follows when it ends.
			continue
		}
		failedAuthn := ev.ResponseStatus != nil && ev.ResponseStatus.Code == 401
		if ev.AuditID == "" || ev.RequestURI == "" || ev.Verb == "" || (ev.User.Username == "" && !failedAuthn) || len(ev.SourceIPs) == 0 || ev.ResponseStatus == nil {
			t.Errorf("audit log line %d lacks auditID, requestURI, verb, user, sourceIPs or responseStatus:\n%s", i+1, line)
			continue
		}
		if len(ev.RequestObject) > 0 || len(ev.ResponseObject) > 0 {
			t.Errorf("audit log line %d has a request or response body (Metadata level has none):\n%s", i+1, clip(string(line)))
		}
		if !strings.Contains(ev.UserAgent, "kubectl") {
			continue
		}
		kubectlLines++
		available[key{ev.RequestURI, ev.ResponseStatus.Code}]++
		if ev.User.Username == saUser && ev.ResponseStatus.Code == 403 && strings.HasPrefix(ev.RequestURI, "/api/v1/namespaces/default/secrets") {
			saw403 = true
		}
		if ev.User.Username == "admin" && ev.ImpersonatedUser != nil && ev.ImpersonatedUser.Username == "alice" {
			sawImpersonation = true
		}
	}
	t.Logf("audit log: %d lines, %d from kubectl; kubectl reported %d requests", lines, kubectlLines, len(requests))

	var missing []string
	for _, r := range requests {
		k := key{r.requestURI, r.code}
		if available[k] > 0 {
			available[k]--
			continue
		}
		missing = append(missing, fmt.Sprintf("%s %s → %d (kubectl %s)", r.method, r.requestURI, r.code, r.command))
	}
	if len(missing) > 0 {
		t.Errorf("%d of %d kubectl requests have no audit line:\n  %s", len(missing), len(requests), strings.Join(missing, "\n  "))
	}
	if !saw403 {
		t.Errorf("audit log: no line for the viewer token's 403 on secrets (user %s, code 403)", saUser)
	}
	if !sawImpersonation {
		t.Errorf("audit log: no line with user admin and impersonatedUser alice")
	}
}
