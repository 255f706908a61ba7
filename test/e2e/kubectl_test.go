package e2e

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// manifest is the multi-document file the session applies in namespace e2e.
const manifest = `apiVersion: v1
kind: ConfigMap
metadata:
  name: app-config
  namespace: e2e
data:
  mode: %s
---
apiVersion: v1
kind: Secret
metadata:
  name: app-secret
  namespace: e2e
type: Opaque
stringData:
  password: s3cret
---
apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: e2e
spec:
  type: ClusterIP
  selector:
    app: web
  ports:
  - name: http
    port: 80
    targetPort: 8080
---
apiVersion: v1
kind: Pod
metadata:
  name: busybox
  namespace: e2e
  labels:
    app: web
spec:
  containers:
  - name: busybox
    image: busybox:1.36
    command: ["sleep", "3600"]
`

// nodeManifest registers a Node object so `get nodes` has a row to print.
const nodeManifest = `apiVersion: v1
kind: Node
metadata:
  name: e2e-node
  labels:
    kubernetes.io/hostname: e2e-node
`

// TestKubectlSession drives one server through a scripted kubectl session.
// The subtests run in order and build on each other.
func TestKubectlSession(t *testing.T) {
	kubectlPath(t)
	s := startServer(t)
	dir := t.TempDir()
	writeFile := func(t *testing.T, name, content string) string {
		t.Helper()
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	appManifest := writeFile(t, "app.yaml", fmt.Sprintf(manifest, "blue"))
	changedManifest := writeFile(t, "app-changed.yaml", fmt.Sprintf(manifest, "green"))

	t.Run("get namespaces", func(t *testing.T) {
		out := s.mustKubectl(t, "get", "namespaces")
		names := column(out, 0)
		for _, ns := range []string{"default", "kube-system", "kube-public", "kube-node-lease"} {
			if !slices.Contains(names, ns) {
				t.Errorf("kubectl get namespaces: no %q in %v", ns, names)
			}
		}
		if h := header(out); !strings.HasPrefix(h, "NAME STATUS AGE") {
			t.Errorf("kubectl get namespaces header = %q, want NAME STATUS AGE", h)
		}
	})

	t.Run("create namespace and configmap", func(t *testing.T) {
		if out := s.mustKubectl(t, "create", "namespace", "e2e"); !strings.Contains(out, "namespace/e2e created") {
			t.Errorf("kubectl create namespace e2e = %q, want namespace/e2e created", out)
		}
		// kubectl create configmap sends a protobuf body; -v=8 logs the
		// request headers so the test can tell.
		out, errOut, err := s.kubectl(t, "create", "configmap", "c1", "--from-literal=a=b", "-n", "e2e", "-v=8")
		if err != nil {
			t.Fatalf("kubectl create configmap c1: %v\n%s", err, clip(errOut))
		}
		if !strings.Contains(out, "configmap/c1 created") {
			t.Errorf("kubectl create configmap c1 = %q, want configmap/c1 created", out)
		}
		if !strings.Contains(errOut, "Content-Type: application/vnd.kubernetes.protobuf") {
			t.Errorf("kubectl create configmap c1 -v=8: no protobuf request Content-Type in the log; the protobuf path was not exercised")
		}
		if got := s.mustKubectl(t, "get", "cm", "c1", "-n", "e2e", "-o", "jsonpath={.data.a}"); got != "b" {
			t.Errorf("c1 .data.a = %q, want b", got)
		}
	})

	t.Run("apply", func(t *testing.T) {
		out := s.mustKubectl(t, "apply", "-f", appManifest)
		for _, obj := range []string{"configmap/app-config", "secret/app-secret", "service/web", "pod/busybox"} {
			if want := obj + " created"; !strings.Contains(out, want) {
				t.Errorf("first kubectl apply: output has no %q:\n%s", want, out)
			}
		}
		if got := s.mustKubectl(t, "get", "cm", "app-config", "-n", "e2e", "-o", "jsonpath={.data.mode}"); got != "blue" {
			t.Errorf("app-config .data.mode = %q, want blue", got)
		}
		// stringData is write-only: the server folds it into data.
		if got := s.mustKubectl(t, "get", "secret", "app-secret", "-n", "e2e", "-o", "jsonpath={.data.password}"); got != "czNjcmV0" {
			t.Errorf("app-secret .data.password = %q, want czNjcmV0 (base64 of s3cret)", got)
		}
		if got := s.mustKubectl(t, "get", "secret", "app-secret", "-n", "e2e", "-o", "jsonpath={.stringData}"); got != "" {
			t.Errorf("app-secret .stringData = %q, want it dropped by the server", got)
		}

		out = s.mustKubectl(t, "apply", "-f", appManifest)
		for _, obj := range []string{"configmap/app-config", "service/web", "pod/busybox"} {
			if want := obj + " unchanged"; !strings.Contains(out, want) {
				t.Errorf("second kubectl apply: output has no %q:\n%s", want, out)
			}
		}
		// A Secret applied with stringData is always "configured" again,
		// upstream too (kubernetes/kubernetes#87736): the server drops
		// stringData, so the client's three-way diff re-adds it.
		if want := "secret/app-secret configured"; !strings.Contains(out, want) {
			t.Errorf("second kubectl apply: output has no %q (upstream behaviour for stringData):\n%s", want, out)
		}

		out = s.mustKubectl(t, "apply", "--dry-run=server", "-f", changedManifest)
		if want := "configmap/app-config configured (server dry run)"; !strings.Contains(out, want) {
			t.Errorf("kubectl apply --dry-run=server: output has no %q:\n%s", want, out)
		}
		if got := s.mustKubectl(t, "get", "cm", "app-config", "-n", "e2e", "-o", "jsonpath={.data.mode}"); got != "blue" {
			t.Errorf("after a server dry run app-config .data.mode = %q, want blue (unchanged)", got)
		}
	})

	t.Run("patch", func(t *testing.T) {
		s.mustKubectl(t, "patch", "pod", "busybox", "-n", "e2e", "--type=strategic",
			"-p", `{"spec":{"containers":[{"name":"busybox","image":"busybox:1.37"}]}}`)
		if got := s.mustKubectl(t, "get", "pod", "busybox", "-n", "e2e", "-o", "jsonpath={.spec.containers[0].image}"); got != "busybox:1.37" {
			t.Errorf("after strategic patch image = %q, want busybox:1.37", got)
		}
		if got := s.mustKubectl(t, "get", "pod", "busybox", "-n", "e2e", "-o", "jsonpath={.spec.containers[0].command}"); !strings.Contains(got, "sleep") {
			t.Errorf("after strategic patch command = %q, want the sleep command kept", got)
		}

		s.mustKubectl(t, "patch", "cm", "app-config", "-n", "e2e", "--type=merge", "-p", `{"data":{"mode":"merged"}}`)
		if got := s.mustKubectl(t, "get", "cm", "app-config", "-n", "e2e", "-o", "jsonpath={.data.mode}"); got != "merged" {
			t.Errorf("after merge patch .data.mode = %q, want merged", got)
		}

		s.mustKubectl(t, "patch", "cm", "app-config", "-n", "e2e", "--type=json", "-p", `[{"op":"add","path":"/data/added","value":"yes"}]`)
		if got := s.mustKubectl(t, "get", "cm", "app-config", "-n", "e2e", "-o", "jsonpath={.data.added},{.data.mode}"); got != "yes,merged" {
			t.Errorf("after json patch .data.added,.data.mode = %q, want yes,merged", got)
		}
	})

	t.Run("label and annotate", func(t *testing.T) {
		s.mustKubectl(t, "label", "cm", "c1", "-n", "e2e", "tier=e2e")
		s.mustKubectl(t, "annotate", "cm", "c1", "-n", "e2e", "note=hello")
		out := s.mustKubectl(t, "get", "cm", "c1", "-n", "e2e", "--show-labels")
		if !strings.Contains(header(out), "LABELS") || !strings.Contains(out, "tier=e2e") {
			t.Errorf("kubectl get cm c1 --show-labels: want a LABELS column with tier=e2e:\n%s", out)
		}
		if got := s.mustKubectl(t, "get", "cm", "c1", "-n", "e2e", "-o", "jsonpath={.metadata.annotations.note}"); got != "hello" {
			t.Errorf("c1 annotation note = %q, want hello", got)
		}
		if got := s.mustKubectl(t, "get", "cm", "-n", "e2e", "-l", "tier=e2e", "-o", "name"); strings.TrimSpace(got) != "configmap/c1" {
			t.Errorf("kubectl get cm -l tier=e2e -o name = %q, want configmap/c1", got)
		}
	})

	t.Run("watch", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
		defer cancel()
		cmd := s.kubectlCmd(ctx, t, "get", "cm", "-n", "e2e", "-w")
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		var stderr strings.Builder
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			t.Fatalf("start kubectl get cm -w: %v", err)
		}
		defer func() {
			cancel()
			cmd.Wait()
		}()
		lines := make(chan string)
		go func() {
			defer close(lines)
			sc := bufio.NewScanner(stdout)
			for sc.Scan() {
				lines <- sc.Text()
			}
		}()
		// waitLine waits for a line starting with "c1 ".
		waitLine := func(what string) {
			t.Helper()
			for {
				select {
				case l, ok := <-lines:
					if !ok {
						t.Fatalf("kubectl get cm -w ended before %s (ctx: %v); stderr: %s", what, ctx.Err(), stderr.String())
					}
					t.Logf("watch: %s", l)
					if strings.HasPrefix(l, "c1 ") {
						return
					}
				case <-ctx.Done():
					t.Fatalf("kubectl get cm -w: no c1 line for %s within 20s; stderr: %s", what, stderr.String())
				}
			}
		}
		waitLine("the initial list")
		s.mustKubectl(t, "patch", "cm", "c1", "-n", "e2e", "--type=merge", "-p", `{"data":{"watched":"yes"}}`)
		waitLine("the update")
	})

	t.Run("tables", func(t *testing.T) {
		out := s.mustKubectl(t, "get", "pods", "-o", "wide", "-n", "e2e")
		if got, want := header(out), "NAME READY STATUS RESTARTS AGE IP NODE NOMINATED NODE READINESS GATES"; got != want {
			t.Errorf("kubectl get pods -o wide header = %q, want %q", got, want)
		}
		if !slices.Contains(column(out, 0), "busybox") {
			t.Errorf("kubectl get pods -o wide: no busybox row:\n%s", out)
		}

		s.mustKubectl(t, "apply", "-f", writeFile(t, "node.yaml", nodeManifest))
		out = s.mustKubectl(t, "get", "nodes")
		if got, want := header(out), "NAME STATUS ROLES AGE VERSION"; got != want {
			t.Errorf("kubectl get nodes header = %q, want %q", got, want)
		}
		if !slices.Contains(column(out, 0), "e2e-node") {
			t.Errorf("kubectl get nodes: no e2e-node row:\n%s", out)
		}

		out = s.mustKubectl(t, "get", "svc", "-n", "e2e")
		if got, want := header(out), "NAME TYPE CLUSTER-IP EXTERNAL-IP PORT(S) AGE"; got != want {
			t.Errorf("kubectl get svc header = %q, want %q", got, want)
		}
		row := rowOf(out, "web")
		if len(row) < 5 || row[1] != "ClusterIP" || row[4] != "80/TCP" {
			t.Errorf("kubectl get svc: web row = %v, want TYPE ClusterIP and PORT(S) 80/TCP", row)
		}
	})

	t.Run("describe", func(t *testing.T) {
		out := s.mustKubectl(t, "describe", "pod", "busybox", "-n", "e2e")
		for _, want := range []string{"Containers:", "busybox:1.37", "Namespace:"} {
			if !strings.Contains(out, want) {
				t.Errorf("kubectl describe pod busybox: output has no %q", want)
			}
		}
	})

	t.Run("explain", func(t *testing.T) {
		out := s.mustKubectl(t, "explain", "pod.spec.containers")
		if !strings.Contains(out, "image") {
			t.Errorf("kubectl explain pod.spec.containers: output does not mention image:\n%s", clip(out))
		}
	})

	t.Run("api-resources", func(t *testing.T) {
		out := s.mustKubectl(t, "api-resources")
		names := column(out, 0)
		for _, r := range []string{"pods", "configmaps", "namespaces", "leases", "certificatesigningrequests", "events"} {
			if !slices.Contains(names, r) {
				t.Errorf("kubectl api-resources: no %q in %v", r, names)
			}
		}
	})

	t.Run("delete namespace", func(t *testing.T) {
		s.mustKubectl(t, "delete", "ns", "e2e", "--wait=false")
		err := eventually(60*time.Second, time.Second, func() error {
			out, errOut, err := s.kubectl(t, "get", "ns", "e2e")
			if err == nil {
				return fmt.Errorf("namespace e2e still exists:\n%s", out)
			}
			if !strings.Contains(errOut, "NotFound") {
				return fmt.Errorf("kubectl get ns e2e: %v: %s", err, errOut)
			}
			return nil
		})
		if err != nil {
			t.Fatalf("namespace e2e not gone within 60s: %v", err)
		}
		out := s.mustKubectl(t, "get", "configmaps,secrets,services,pods", "-n", "e2e", "-o", "name")
		if strings.TrimSpace(out) != "" {
			t.Errorf("objects left in the deleted namespace e2e:\n%s", out)
		}
	})
}

// header returns the first line of a table with its columns separated by
// single spaces.
func header(table string) string {
	first, _, _ := strings.Cut(table, "\n")
	return strings.Join(strings.Fields(first), " ")
}

// column returns field i of every row after the header.
func column(table string, i int) []string {
	var out []string
	lines := strings.Split(strings.TrimSpace(table), "\n")
	for _, l := range lines[min(1, len(lines)):] {
		if f := strings.Fields(l); len(f) > i {
			out = append(out, f[i])
		}
	}
	return out
}

// rowOf returns the fields of the row whose first column is name.
func rowOf(table, name string) []string {
	for _, l := range strings.Split(table, "\n") {
		if f := strings.Fields(l); len(f) > 0 && f[0] == name {
			return f
		}
	}
	return nil
}
