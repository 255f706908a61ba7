package e2e

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"math/big"
	"net"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	certificatesv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"

	"tether/test/framework"
)

const (
	// joinReadyWithin bounds agent start → Node Ready.
	joinReadyWithin = 15 * time.Second
	// notReadyWithin bounds agent stop → Node not Ready (40 s grace).
	notReadyWithin = 60 * time.Second
	// revokedStopWithin bounds `tether node revoke` → the agent exits.
	revokedStopWithin = 30 * time.Second
	// clusterCIDR is the server's default --cluster-cidr.
	clusterCIDR = "10.244.0.0/16"
	// taintUnreachable is the node-lifecycle controller's taint.
	taintUnreachable = "node.kubernetes.io/unreachable"
)

// TestJoin joins two nodes, each in its own network namespace, to a server
// in a third, all on one bridge, with the command `tether token create`
// prints; then checks what a wrong CA pin and an expired token do, that a
// stopped agent's node goes NotReady and comes back, and that a revoked
// node's agent stops and its certificate gets 401.
func TestJoin(t *testing.T) {
	framework.RequireRoot(t)
	kubectlPath(t)
	network := framework.NewNetwork(t)
	srvHost, n1Host, n2Host := network.AddHost("srv"), network.AddHost("n1"), network.AddHost("n2")
	tmp := shortTemp(t)
	c := startNetServer(t, srvHost, filepath.Join(tmp, "srv"))
	join := c.joinCommand(t)

	type node struct {
		name    string
		host    *framework.Host
		dataDir string
		args    []string
		proc    *hostProc
		addr    string // kubelet address from the [5/5] line
	}
	nodes := []*node{
		{name: "node-1", host: n1Host, dataDir: filepath.Join(tmp, "n1")},
		{name: "node-2", host: n2Host, dataDir: filepath.Join(tmp, "n2")},
	}

	// The agents run across subtests, so they belong to the test.
	top := t
	ok := t.Run("join", func(t *testing.T) {
		for _, n := range nodes {
			n.args = agentArgs(join, n.dataDir, n.name)
			n.proc = startProc(top, n.host, "agent "+n.name, n.args...)
		}
		// Record when each Node is first Ready, from its agent's start.
		readyAfter := map[string]time.Duration{}
		framework.Eventually(t, joinReadyWithin+5*time.Second, func() (bool, error) {
			m, err := c.nodes(t)
			if err != nil {
				return false, err
			}
			for _, n := range nodes {
				if _, done := readyAfter[n.name]; done {
					continue
				}
				if node := m[n.name]; node != nil && condition(node, corev1.NodeReady) == corev1.ConditionTrue {
					readyAfter[n.name] = time.Since(n.proc.started)
				}
				if err, exited := n.proc.waitExit(0); exited {
					t.Fatalf("agent %s exited while joining: %v\n%s", n.name, err, n.proc.output())
				}
			}
			if len(readyAfter) < len(nodes) {
				return false, fmt.Errorf("Ready so far: %v", readyAfter)
			}
			return true, nil
		})
		for _, n := range nodes {
			line, progressAfter, err := n.proc.waitLine("[5/5]", time.Second)
			if err != nil {
				t.Fatalf("agent %s: %v", n.name, err)
			}
			t.Logf("join time %s: [5/5] printed after %s, Node Ready (kubectl poll) after %s", n.name, progressAfter.Round(time.Millisecond), readyAfter[n.name].Round(time.Millisecond))
			if readyAfter[n.name] > joinReadyWithin {
				t.Errorf("%s Ready %s after its agent started, want within %s", n.name, readyAfter[n.name].Round(time.Millisecond), joinReadyWithin)
			}
			for i := 1; i <= 4; i++ {
				if _, _, err := n.proc.waitLine(fmt.Sprintf("[%d/5]", i), 0); err != nil {
					t.Errorf("agent %s: progress line [%d/5] missing: %v", n.name, i, err)
				}
			}
			if n.addr, err = registeredAddr(line); err != nil {
				t.Fatalf("agent %s: %v", n.name, err)
			}
			if want := net.JoinHostPort(n.host.IP.String(), "10250"); n.addr != want {
				t.Errorf("agent %s serves the kubelet on %s, want %s (the route to the server from %s, default port)", n.name, n.addr, want, n.host.Netns)
			}
		}
		c.mustKubectl(t, "get", "nodes", "-o", "wide")

		// Addresses, kubelet endpoint and pod CIDRs.
		m, err := c.nodes(t)
		if err != nil {
			t.Fatal(err)
		}
		cidrs := map[string]string{}
		_, cluster, _ := net.ParseCIDR(clusterCIDR)
		for _, n := range nodes {
			node := m[n.name]
			want := []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: n.host.IP.String()}, {Type: corev1.NodeHostName, Address: n.name}}
			if !slices.Equal(node.Status.Addresses, want) {
				t.Errorf("%s status.addresses = %v, want %v", n.name, node.Status.Addresses, want)
			}
			if p := node.Status.DaemonEndpoints.KubeletEndpoint.Port; p != 10250 {
				t.Errorf("%s daemonEndpoints.kubeletEndpoint.port = %d, want 10250", n.name, p)
			}
			// The pod CIDR is allocated by a controller shortly after
			// registration.
			framework.Eventually(t, 10*time.Second, func() (bool, error) {
				m, err := c.nodes(t)
				if err != nil {
					return false, err
				}
				if m[n.name].Spec.PodCIDR == "" {
					return false, fmt.Errorf("%s has no spec.podCIDR yet", n.name)
				}
				node = m[n.name]
				return true, nil
			})
			ip, ipnet, err := net.ParseCIDR(node.Spec.PodCIDR)
			if err != nil {
				t.Errorf("%s spec.podCIDR %q: %v", n.name, node.Spec.PodCIDR, err)
				continue
			}
			if ones, bits := ipnet.Mask.Size(); ones != 24 || bits != 32 || !cluster.Contains(ip) || !ip.Equal(ipnet.IP) {
				t.Errorf("%s spec.podCIDR = %s, want a /24 inside %s", n.name, node.Spec.PodCIDR, clusterCIDR)
			}
			if other, dup := cidrs[node.Spec.PodCIDR]; dup {
				t.Errorf("%s and %s share spec.podCIDR %s", n.name, other, node.Spec.PodCIDR)
			}
			cidrs[node.Spec.PodCIDR] = n.name
			t.Logf("%s: InternalIP %s, podCIDR %s", n.name, n.host.IP, node.Spec.PodCIDR)
		}

		// The serving certificate on each kubelet port, seen from the
		// server's host. The agent asks for it after registering, so it
		// may take a moment.
		for _, n := range nodes {
			var leafErr error
			framework.Eventually(t, 10*time.Second, func() (bool, error) {
				certs, err := servingCert(t.Context(), srvHost, n.addr)
				if err != nil {
					return false, err
				}
				leaf, err := verifyServing(certs, c.CA)
				if err != nil {
					leafErr = err
					return true, nil
				}
				leafErr = nil
				var ips []string
				for _, ip := range leaf.IPAddresses {
					ips = append(ips, ip.String())
				}
				t.Logf("%s serving certificate: serial %x, subject %q, issuer %q, IP SANs %v, DNS SANs %v, valid %s – %s",
					n.name, leaf.SerialNumber, leaf.Subject, leaf.Issuer, ips, leaf.DNSNames,
					leaf.NotBefore.UTC().Format(time.RFC3339), leaf.NotAfter.UTC().Format(time.RFC3339))
				if want := []string{n.host.IP.String()}; !slices.Equal(ips, want) {
					t.Errorf("%s serving certificate IP SANs = %v, want exactly %v", n.name, ips, want)
				}
				if want := []string{n.name}; !slices.Equal(leaf.DNSNames, want) {
					t.Errorf("%s serving certificate DNS SANs = %v, want %v (the Node's Hostname address)", n.name, leaf.DNSNames, want)
				}
				if want := "system:node:" + n.name; leaf.Subject.CommonName != want {
					t.Errorf("%s serving certificate CN = %q, want %q", n.name, leaf.Subject.CommonName, want)
				}
				if !bytes.Equal(leaf.RawIssuer, c.CA.RawSubject) {
					t.Errorf("%s serving certificate issuer = %q, want the server CA %q", n.name, leaf.Issuer, c.CA.Subject)
				}
				return true, nil
			})
			if leafErr != nil {
				t.Errorf("%s: %v", n.name, leafErr)
			}
			// A client that trusts only the server CA and checks the
			// node's IP completes the handshake; without credentials the
			// kubelet API answers 401.
			roots := x509.NewCertPool()
			roots.AddCert(c.CA)
			code, body, err := httpsGet(t.Context(), srvHost, "https://"+n.addr+"/healthz", roots, nil)
			if err != nil || code != 401 {
				t.Errorf("anonymous GET https://%s/healthz verified with the server CA = %d %q (err %v), want 401", n.addr, code, body, err)
			}
		}

		// CSRs: an approved and issued client and serving CSR per node.
		table := c.mustKubectl(t, "get", "csr")
		csrs := c.csrs(t)
		for _, n := range nodes {
			for _, signer := range []string{certificatesv1.KubeAPIServerClientKubeletSignerName, certificatesv1.KubeletServingSignerName} {
				var found []string
				for _, r := range csrs {
					if r.CN != "system:node:"+n.name || r.Spec.SignerName != signer {
						continue
					}
					found = append(found, r.Name)
					if !approved(r) || len(r.Status.Certificate) == 0 {
						t.Errorf("CSR %s (%s, %s) conditions %v, certificate %d bytes; want Approved and issued", r.Name, n.name, signer, r.Status.Conditions, len(r.Status.Certificate))
					}
					row := rowOf(table, r.Name)
					if len(row) == 0 || row[len(row)-1] != "Approved,Issued" || !slices.Contains(row, signer) {
						t.Errorf("kubectl get csr row for %s = %v, want signer %s and condition Approved,Issued", r.Name, row, signer)
					}
				}
				if len(found) != 1 {
					t.Errorf("CSRs for system:node:%s with signer %s = %v, want exactly one", n.name, signer, found)
				}
			}
		}
	})
	if !ok {
		return
	}

	t.Run("wrong-ca-pin", func(t *testing.T) {
		before := c.csrs(t)
		pin := join[len(join)-1]
		bad := flipHexDigit(pin)
		args := slices.Clone(join)
		args[len(args)-1] = bad
		args = agentArgs(args, filepath.Join(tmp, "badpin"), "node-badpin", "--kubelet-port", "10251")
		start := time.Now()
		out, errOut, err := runIn(t, n1Host, 60*time.Second, true, tetherBin, args...)
		t.Logf("agent with a wrong --ca-cert-hash exited after %s", time.Since(start).Round(time.Millisecond))
		if err == nil {
			t.Errorf("agent with a wrong --ca-cert-hash exited 0, want non-zero")
		}
		all := out + errOut
		for _, want := range []string{"does not match", pin, bad} {
			if !strings.Contains(all, want) {
				t.Errorf("agent output lacks %q:\n%s", want, all)
			}
		}
		if !strings.Contains(strings.ToLower(all), "pin") {
			t.Errorf("agent output does not mention the CA pin:\n%s", all)
		}
		after := c.csrs(t)
		for _, r := range after {
			if r.CN == "system:node:node-badpin" || !slices.ContainsFunc(before, func(b csr) bool { return b.Name == r.Name }) {
				t.Errorf("CSR %s (CN %q) appeared after the agent with a wrong pin ran; want none", r.Name, r.CN)
			}
		}
	})

	t.Run("expired-token", func(t *testing.T) {
		expiring := c.joinCommand(t, "--ttl", "2s")
		time.Sleep(4 * time.Second)
		args := agentArgs(expiring, filepath.Join(tmp, "expired"), "node-expired", "--kubelet-port", "10252")
		start := time.Now()
		out, errOut, err := runIn(t, n1Host, 60*time.Second, true, tetherBin, args...)
		t.Logf("agent with an expired token exited after %s", time.Since(start).Round(time.Millisecond))
		if err == nil {
			t.Errorf("agent with an expired token exited 0, want non-zero")
		}
		if all := out + errOut; !strings.Contains(all, "expired") {
			t.Errorf("agent output does not say the token expired:\n%s", all)
		}
		for _, r := range c.csrs(t) {
			if r.CN == "system:node:node-expired" {
				t.Errorf("CSR %s was created for node-expired with an expired token", r.Name)
			}
		}
	})

	t.Run("stop-and-restart", func(t *testing.T) {
		n := nodes[0]
		clientCSRs := func() int {
			k := 0
			for _, r := range c.csrs(t) {
				if r.CN == "system:node:"+n.name && r.Spec.SignerName == certificatesv1.KubeAPIServerClientKubeletSignerName {
					k++
				}
			}
			return k
		}
		csrsBefore := clientCSRs()
		stopped := time.Now()
		if err := n.proc.stop(); err != nil {
			t.Errorf("agent %s after SIGTERM: %v, want exit status 0", n.name, err)
		}
		var notReady time.Duration
		framework.Eventually(t, notReadyWithin, func() (bool, error) {
			m, err := c.nodes(t)
			if err != nil {
				return false, err
			}
			node := m[n.name]
			if node == nil {
				return false, fmt.Errorf("node %s is gone", n.name)
			}
			if s := condition(node, corev1.NodeReady); s == corev1.ConditionTrue {
				return false, fmt.Errorf("%s still Ready %s after its agent stopped", n.name, time.Since(stopped).Round(time.Second))
			}
			if notReady == 0 {
				notReady = time.Since(stopped)
			}
			// The condition and the taint are two writes of the node
			// lifecycle controller; wait for both.
			if !hasTaint(node, taintUnreachable, corev1.TaintEffectNoExecute) {
				return false, fmt.Errorf("%s is %s but lacks the taint %s:NoExecute (taints %v)", n.name, condition(node, corev1.NodeReady), taintUnreachable, node.Spec.Taints)
			}
			return true, nil
		})
		t.Logf("%s not Ready %s after its agent stopped", n.name, notReady.Round(time.Millisecond))
		c.mustKubectl(t, "get", "node", n.name)

		// The same command again: the stored credentials are used, the
		// token is not.
		n.proc = startProc(top, n.host, "agent "+n.name+" (restarted)", n.args...)
		if _, _, err := n.proc.waitLine("[5/5]", joinReadyWithin); err != nil {
			t.Fatalf("restarted agent: %v", err)
		}
		if line, _, err := n.proc.waitLine("using existing credentials", 0); err != nil {
			t.Errorf("restarted agent did not reuse its credentials: %v", err)
		} else {
			t.Logf("restarted agent: %s", line)
		}
		var readyAgain time.Duration
		framework.Eventually(t, joinReadyWithin, func() (bool, error) {
			m, err := c.nodes(t)
			if err != nil {
				return false, err
			}
			node := m[n.name]
			if node == nil || condition(node, corev1.NodeReady) != corev1.ConditionTrue {
				return false, fmt.Errorf("%s not Ready yet", n.name)
			}
			if readyAgain == 0 {
				readyAgain = time.Since(n.proc.started)
			}
			if hasTaint(node, taintUnreachable, corev1.TaintEffectNoExecute) {
				return false, fmt.Errorf("%s is Ready but still has the taint %s", n.name, taintUnreachable)
			}
			return true, nil
		})
		t.Logf("%s Ready again %s after its agent restarted", n.name, readyAgain.Round(time.Millisecond))
		if after := clientCSRs(); after != csrsBefore {
			t.Errorf("restarted agent: %d client CSRs for %s, was %d; want its stored certificate reused", after, n.name, csrsBefore)
		}
	})

	t.Run("revoke", func(t *testing.T) {
		n := nodes[1]
		creds, err := loadNodeCreds(n.dataDir)
		if err != nil {
			t.Fatal(err)
		}
		// Before: the node's certificate is accepted.
		url := creds.Server + "/api/v1/nodes/" + n.name
		if code, body, err := httpsGet(t.Context(), n.host, url, creds.Roots, creds.keyPair); err != nil || code != 200 {
			t.Fatalf("GET %s as %s before revocation = %d %s (err %v), want 200", url, n.name, code, clip(string(body)), err)
		}
		// Keep the pair: the agent could rotate it, but not within this test.
		kp, err := creds.keyPair()
		if err != nil {
			t.Fatal(err)
		}
		if out, errOut, err := c.tether(t, "node", "revoke", n.name); err != nil {
			t.Fatalf("tether node revoke %s: %v\n%s%s", n.name, err, out, errOut)
		}
		revoked := time.Now()
		exitErr, exited := n.proc.waitExit(revokedStopWithin)
		if !exited {
			t.Fatalf("agent %s still running %s after tether node revoke", n.name, revokedStopWithin)
		}
		t.Logf("agent %s exited %s after tether node revoke: %v", n.name, time.Since(revoked).Round(time.Millisecond), exitErr)
		if exitErr == nil {
			t.Errorf("agent %s exited 0 after its node was revoked, want non-zero", n.name)
		}
		out := n.proc.output()
		t.Logf("agent %s's last words:\n%s", n.name, lastLines(out, 2))
		if !strings.Contains(out, "revoked") {
			t.Errorf("agent %s output does not say its certificate was revoked:\n%s", n.name, lastLines(out, 10))
		}
		code, body, err := httpsGet(t.Context(), n.host, url, creds.Roots, func() (*tls.Certificate, error) { return kp, nil })
		if err != nil || code != 401 {
			t.Errorf("GET %s with %s's revoked certificate = %d %s (err %v), want 401", url, n.name, code, clip(string(body)), err)
		}
		if _, errOut, err := c.kubectl(t, true, "get", "node", n.name); err == nil || !strings.Contains(errOut, "NotFound") {
			t.Errorf("kubectl get node %s after revocation: err %v, stderr %q; want NotFound", n.name, err, errOut)
		}
	})
}

// approved reports whether the CSR has the Approved condition and no
// Denied or Failed one.
func approved(r csr) bool {
	ok := false
	for _, c := range r.Status.Conditions {
		switch c.Type {
		case certificatesv1.CertificateApproved:
			ok = c.Status == corev1.ConditionTrue
		case certificatesv1.CertificateDenied, certificatesv1.CertificateFailed:
			return false
		}
	}
	return ok
}

// flipHexDigit changes the last hex digit of a sha256:<hex> pin.
func flipHexDigit(pin string) string {
	last := pin[len(pin)-1]
	repl := byte('0')
	if last == '0' {
		repl = '1'
	}
	return pin[:len(pin)-1] + string(repl)
}

// TestRotation runs one agent against a server that signs node
// certificates for two minutes, and while a client makes requests as the
// node every 200 ms with the key pair the agent's kubeconfig names (read
// again for every request, on a new connection), waits for the client and
// the serving certificate to be rotated twice each. Every request must
// succeed. It takes about four minutes.
func TestRotation(t *testing.T) {
	const (
		signing       = 2 * time.Minute
		wantRotations = 2
		// Each rotation comes at 70–90 % of a 2-minute lifetime, so two
		// take at most about 3.6 minutes after the join.
		rotationDeadline = 5*time.Minute + 30*time.Second
		requestEvery     = 200 * time.Millisecond
		nodeName         = "node-r"
	)
	if testing.Short() {
		t.Skip("skipping: waits for two certificate rotations (about 4 minutes)")
	}
	framework.RequireRoot(t)
	kubectlPath(t)
	network := framework.NewNetwork(t)
	srvHost, n1Host := network.AddHost("srv"), network.AddHost("n1")
	tmp := shortTemp(t)
	c := startNetServer(t, srvHost, filepath.Join(tmp, "srv"), "--cluster-signing-duration", signing.String())
	join := c.joinCommand(t)
	dataDir := filepath.Join(tmp, "n1")
	agent := startProc(t, n1Host, "agent "+nodeName, agentArgs(join, dataDir, nodeName)...)
	line, took, err := agent.waitLine("[5/5]", joinReadyWithin)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("agent registered after %s", took.Round(time.Millisecond))
	kubeletAddr, err := registeredAddr(line)
	if err != nil {
		t.Fatal(err)
	}
	creds, err := loadNodeCreds(dataDir)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("the agent's kubeconfig names the client certificate %s and key %s", creds.CertFile, creds.KeyFile)
	pkiDir := filepath.Join(dataDir, "pki")
	serverPair := filepath.Join(pkiDir, "kubelet-server-current.pem")

	// Requests as the node for the whole test.
	var (
		mu        sync.Mutex
		requests  int
		failures  []string
		stopReqs  = make(chan struct{})
		reqsDone  = make(chan struct{})
		nodeURL   = creds.Server + "/api/v1/nodes/" + nodeName
		testStart = time.Now()
	)
	go func() {
		defer close(reqsDone)
		tick := time.NewTicker(requestEvery)
		defer tick.Stop()
		for {
			select {
			case <-stopReqs:
				return
			case <-tick.C:
			}
			code, body, err := httpsGet(t.Context(), n1Host, nodeURL, creds.Roots, creds.keyPair)
			mu.Lock()
			requests++
			if err != nil || code != 200 || !strings.Contains(string(body), `"name":"`+nodeName+`"`) {
				failures = append(failures, fmt.Sprintf("%s: GET %s = %d %s (err %v)", time.Since(testStart).Round(time.Millisecond), nodeURL, code, clip(string(body)), err))
			}
			mu.Unlock()
		}
	}()
	stopRequests := func() {
		select {
		case <-stopReqs:
		default:
			close(stopReqs)
		}
		<-reqsDone
	}
	t.Cleanup(stopRequests)

	// Watch the two current pairs; each new serial is a rotation.
	type pair struct {
		name    string
		path    string
		serials []*big.Int
	}
	pairs := []*pair{
		{name: "client", path: creds.CertFile},
		{name: "serving", path: serverPair},
	}
	rotated := func() bool {
		for _, p := range pairs {
			if len(p.serials) < 1+wantRotations {
				return false
			}
		}
		return true
	}
	deadline := time.Now().Add(rotationDeadline)
	for !rotated() && time.Now().Before(deadline) {
		if err, exited := agent.waitExit(0); exited {
			t.Fatalf("agent exited during the rotation test: %v", err)
		}
		for _, p := range pairs {
			cert, err := certFile(p.path)
			if err != nil {
				continue // the serving pair comes a moment after the join
			}
			if n := len(p.serials); n > 0 && p.serials[n-1].Cmp(cert.SerialNumber) == 0 {
				continue
			}
			p.serials = append(p.serials, cert.SerialNumber)
			what := "first"
			if len(p.serials) > 1 {
				what = fmt.Sprintf("rotation %d", len(p.serials)-1)
			}
			t.Logf("%s certificate %s at %s after the agent started: serial %x, valid %s – %s (%s)",
				p.name, what, time.Since(agent.started).Round(time.Second), cert.SerialNumber,
				cert.NotBefore.UTC().Format(time.TimeOnly), cert.NotAfter.UTC().Format(time.TimeOnly), cert.NotAfter.Sub(cert.NotBefore))
			if time.Until(cert.NotBefore) > time.Second {
				t.Errorf("%s certificate is valid only from %s, in the future", p.name, cert.NotBefore.UTC().Format(time.RFC3339))
			}
			if time.Until(cert.NotAfter) > signing+time.Second {
				t.Errorf("%s certificate expires in %s, more than --cluster-signing-duration %s from now", p.name, time.Until(cert.NotAfter).Round(time.Second), signing)
			}
		}
		time.Sleep(500 * time.Millisecond)
	}
	// A few more requests on the last pair before counting.
	time.Sleep(2 * time.Second)
	stopRequests()
	mu.Lock()
	t.Logf("%d requests as %s over %s, %d failed", requests, nodeName, time.Since(testStart).Round(time.Second), len(failures))
	for i, f := range failures {
		if i == 20 {
			t.Errorf("… and %d more failed requests", len(failures)-20)
			break
		}
		t.Errorf("failed request %s", f)
	}
	mu.Unlock()
	for _, p := range pairs {
		if got := len(p.serials) - 1; got < wantRotations {
			t.Errorf("%s certificate rotated %d times within %s, want at least %d", p.name, max(got, 0), rotationDeadline, wantRotations)
		}
	}
	if requests < int(time.Minute/requestEvery) {
		t.Errorf("only %d requests were made; the client did not run the whole time", requests)
	}

	// The kubelet port serves the newest serving certificate, and the node
	// stayed Ready.
	want := pairs[1].serials[len(pairs[1].serials)-1]
	framework.Eventually(t, 10*time.Second, func() (bool, error) {
		certs, err := servingCert(t.Context(), srvHost, kubeletAddr)
		if err != nil {
			return false, err
		}
		leaf, err := verifyServing(certs, c.CA)
		if err != nil {
			return false, err
		}
		if leaf.SerialNumber.Cmp(want) != 0 {
			return false, fmt.Errorf("kubelet serves serial %x, want the current %x", leaf.SerialNumber, want)
		}
		return true, nil
	})
	m, err := c.nodes(t)
	if err != nil {
		t.Fatal(err)
	}
	if node := m[nodeName]; node == nil || condition(node, corev1.NodeReady) != corev1.ConditionTrue {
		t.Errorf("%s not Ready after the rotations", nodeName)
	}
	c.mustKubectl(t, "get", "csr")

	// The agent's own requests (lease, status, CSRs) switched to the new
	// certificates too: it logged no failure.
	var certLines []string
	for _, l := range strings.Split(agent.output(), "\n") {
		if strings.Contains(l, "level=WARN") || strings.Contains(l, "level=ERROR") {
			t.Errorf("agent logged during the rotations: %s", l)
		}
		if strings.Contains(strings.ToLower(l), "certificate") {
			certLines = append(certLines, l)
		}
	}
	t.Logf("agent's certificate messages:\n%s", strings.Join(certLines, "\n"))
}
