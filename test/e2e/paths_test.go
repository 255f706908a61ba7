package e2e

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"tether/pki"
	"tether/test/framework"
)

// pathsJSON is the part of `tether paths -o json` the test reads.
type pathsJSON struct {
	Server    string `json:"server"`
	Namespace string `json:"namespace"`
	Paths     []struct {
		ID     string `json:"id"`
		Port   string `json:"port"`
		Result string `json:"result"`
		Reason string `json:"reason"`
		Nodes  []struct {
			Node   string `json:"node"`
			Result string `json:"result"`
			Reason string `json:"reason"`
		} `json:"nodes"`
	} `json:"paths"`
	Failed []string `json:"failed"`
}

// TestPaths runs `tether paths` on a two-node cluster: every path passes;
// then node-2's kubelet address is taken by an impostor with a serving
// certificate from another CA, and the report fails P5 naming node-2.
func TestPaths(t *testing.T) {
	requirePodRuntime(t)
	kubectlPath(t)
	c := startPodCluster(t)
	n2 := c.nodes[1]

	paths := func(t *testing.T, args ...string) (string, string, error) {
		t.Helper()
		full := append([]string{"paths", "--kubeconfig", c.Kubeconfig, "--image", c.image}, args...)
		return runIn(t, c.host, 3*time.Minute, true, tetherBin, full...)
	}
	// noProbeNamespaces checks that the throwaway namespaces are deleted
	// (gone or terminating).
	noProbeNamespaces := func(t *testing.T) {
		t.Helper()
		nss, err := c.client.CoreV1().Namespaces().List(t.Context(), metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		for _, ns := range nss.Items {
			if strings.HasPrefix(ns.Name, "tether-paths-") && ns.DeletionTimestamp == nil {
				t.Errorf("namespace %s left behind", ns.Name)
			}
		}
	}

	// The nodes report their certificates' expiry with their first status
	// update, a heartbeat after joining.
	framework.Eventually(t, 30*time.Second, func() (bool, error) {
		for _, n := range c.nodes {
			node, err := c.client.CoreV1().Nodes().Get(t.Context(), n.name, metav1.GetOptions{})
			if err != nil {
				return false, err
			}
			for _, a := range []string{"tether.dev/client-certificate-expires", "tether.dev/serving-certificate-expires"} {
				if node.Annotations[a] == "" {
					return false, fmt.Errorf("node %s has no annotation %s yet", n.name, a)
				}
			}
		}
		return true, nil
	})

	t.Run("healthy cluster", func(t *testing.T) {
		out, errOut, err := paths(t)
		if err != nil {
			t.Fatalf("tether paths: %v\n%s%s", err, out, errOut)
		}
		t.Logf("tether paths:\n%s", out)
		for _, id := range []string{"P0", "P1", "P2", "P3", "P4", "P5", "P6", "P7", "P8"} {
			if !regexp.MustCompile(`(?m)^` + id + `\s.*\sPASS\s`).MatchString(out) {
				t.Errorf("row %s is not PASS:\n%s", id, out)
			}
		}
		if !regexp.MustCompile(`(?m)^P9\s.*\sSKIP\s+not available yet`).MatchString(out) {
			t.Errorf("row P9 is not SKIP (not available yet):\n%s", out)
		}
		if !regexp.MustCompile(`(?m)^P10\s.*\sSKIP\s+no node keeps a tunnel`).MatchString(out) {
			t.Errorf("row P10 is not SKIP (no node keeps a tunnel):\n%s", out)
		}
		if !strings.Contains(errOut, "waiting for probe pods on 2 node(s)") {
			t.Errorf("stderr lacks the progress line about the probe pods:\n%s", errOut)
		}
		noProbeNamespaces(t)

		out, errOut, err = paths(t, "-o", "json")
		if err != nil {
			t.Fatalf("tether paths -o json: %v\n%s%s", err, out, errOut)
		}
		var rep pathsJSON
		if err := json.Unmarshal([]byte(out), &rep); err != nil {
			t.Fatalf("tether paths -o json: %v\n%s", err, out)
		}
		if rep.Server != c.URL || len(rep.Failed) != 0 || !strings.HasPrefix(rep.Namespace, "tether-paths-") {
			t.Errorf("server %q failed %v namespace %q; want %s, none failed, a tether-paths- namespace", rep.Server, rep.Failed, rep.Namespace, c.URL)
		}
		want := map[string]string{"P0": "PASS", "P1": "PASS", "P2": "PASS", "P3": "PASS", "P4": "PASS", "P5": "PASS", "P6": "PASS", "P7": "PASS", "P8": "PASS", "P9": "SKIP", "P10": "SKIP"}
		for _, p := range rep.Paths {
			if want[p.ID] != p.Result {
				t.Errorf("%s: %s (%s), want %s", p.ID, p.Result, p.Reason, want[p.ID])
			}
			delete(want, p.ID)
			switch p.ID {
			case "P3":
				// The VIP is the first address of the service range and
				// leads to the API server.
				if !strings.HasPrefix(p.Port, "10.96.0.1:443 → "+c.host.IP.String()+":6443") {
					t.Errorf("P3 port %q, want 10.96.0.1:443 → %s:6443", p.Port, c.host.IP)
				}
				fallthrough
			case "P2", "P5", "P6", "P7", "P8":
				got := map[string]string{}
				for _, n := range p.Nodes {
					got[n.Node] = n.Result
				}
				if got["node-1"] != "PASS" || got["node-2"] != "PASS" {
					t.Errorf("%s per node %+v, want PASS on node-1 and node-2", p.ID, p.Nodes)
				}
			}
		}
		if len(want) > 0 {
			t.Errorf("paths missing from the report: %v", want)
		}
		noProbeNamespaces(t)
	})

	t.Run("missing image", func(t *testing.T) {
		out, errOut, err := runIn(t, c.host, 3*time.Minute, true, tetherBin, "paths", "--kubeconfig", c.Kubeconfig, "--image", "tether.local/busybox:latest")
		if err == nil {
			t.Fatalf("tether paths exited 0 without the image on the nodes:\n%s", out)
		}
		t.Logf("tether paths without the image:\n%s", out)
		p3 := regexp.MustCompile(`(?m)^P3\s.*$`).FindString(out)
		if !strings.Contains(p3, "FAIL") || !strings.Contains(p3, "make busybox-image") || !strings.Contains(p3, "--image") {
			t.Errorf("P3 row %q, want FAIL telling to run make busybox-image or pass --image", p3)
		}
		if !strings.Contains(errOut, "P3 (node-1, node-2)") {
			t.Errorf("stderr does not name P3 on both nodes:\n%s", errOut)
		}
		noProbeNamespaces(t)
	})

	t.Run("Ctrl-C deletes the namespace", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
		defer cancel()
		cmd := c.host.Command(ctx, tetherBin, "paths", "--kubeconfig", c.Kubeconfig, "--image", c.image)
		var stdout bytes.Buffer
		cmd.Stdout = &stdout
		stderr, _ := cmd.StderrPipe()
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		var errOut strings.Builder
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			errOut.WriteString(sc.Text() + "\n")
			if strings.Contains(sc.Text(), "waiting for probe pods") {
				cmd.Process.Signal(os.Interrupt)
				break
			}
		}
		for sc.Scan() {
			errOut.WriteString(sc.Text() + "\n")
		}
		err := cmd.Wait()
		t.Logf("tether paths interrupted (err=%v):\n%s", err, errOut.String())
		if !strings.Contains(errOut.String(), "deleted namespace tether-paths-") {
			t.Errorf("stderr does not say the namespace was deleted")
		}
		// The pods may have finished before the signal came; if not, the
		// run says it was interrupted.
		if err != nil && !strings.Contains(errOut.String(), "interrupted") {
			t.Errorf("exit %v without saying it was interrupted", err)
		}
		noProbeNamespaces(t)
	})

	t.Run("impostor at node-2's kubelet address", func(t *testing.T) {
		// Let node-2's agent remove the probe containers before it stops.
		framework.Eventually(t, 20*time.Second, func() (bool, error) {
			out, err := exec.Command("runc", "--root", filepath.Join(n2.dataDir, "containers", "runc"), "list", "-q").Output()
			return settled(err == nil && strings.TrimSpace(string(out)) == "", fmt.Errorf("containers on node-2: %q %v", out, err))
		})
		if err := n2.proc.stop(); err != nil {
			t.Logf("agent stop: %v", err)
		}
		other, err := pki.NewCA("impostor-ca", time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		certPEM, keyPEM, err := other.NewKeyAndCert(pki.CertRequest{CommonName: "system:node:node-2", IPAddresses: []net.IP{n2.host.IP},
			Usages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, Validity: time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		cert, err := tls.X509KeyPair(certPEM, keyPEM)
		if err != nil {
			t.Fatal(err)
		}
		ln, err := n2.host.Listen("tcp", net.JoinHostPort(n2.host.IP.String(), "10250"))
		if err != nil {
			t.Fatal(err)
		}
		srv := &http.Server{
			Handler:   http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}),
			TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert}},
		}
		go srv.ServeTLS(ln, "", "")
		defer srv.Close()

		start := time.Now()
		out, errOut, err := paths(t, "--timeout", "30s")
		t.Logf("tether paths took %s", time.Since(start).Round(time.Millisecond))
		if err == nil {
			t.Fatalf("tether paths exited 0 with an impostor at node-2's kubelet address:\n%s", out)
		}
		t.Logf("tether paths with the impostor:\n%s", out)
		if !regexp.MustCompile(`P5 \([^)]*node-2`).MatchString(errOut) {
			t.Errorf("stderr does not name P5 failing on node-2:\n%s", errOut)
		}
		p5 := regexp.MustCompile(`(?m)^P5\s.*$`).FindString(out)
		if !strings.Contains(p5, "FAIL") || !strings.Contains(p5, "node-2") || !strings.Contains(p5, "certificate") {
			t.Errorf("P5 row %q, want FAIL naming node-2's kubelet certificate", p5)
		}
		// The API server's proxy to the kubelet verifies it as P5 does.
		p8 := regexp.MustCompile(`(?m)^P8\s.*$`).FindString(out)
		if !strings.Contains(p8, "FAIL") || !strings.Contains(p8, "node-2") || !strings.Contains(p8, "certificate") {
			t.Errorf("P8 row %q, want FAIL naming node-2's kubelet certificate", p8)
		}
		if regexp.MustCompile(`(?m)^\s+node-1\s.*FAIL`).MatchString(out) {
			t.Errorf("a check failed on node-1, which is healthy:\n%s", out)
		}
		noProbeNamespaces(t)
	})
}
