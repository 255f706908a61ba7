package e2e

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// status is the part of a metav1.Status the tests look at.
type status struct {
	Kind    string `json:"kind"`
	Status  string `json:"status"`
	Reason  string `json:"reason"`
	Message string `json:"message"`
	Code    int    `json:"code"`
	Details struct {
		Causes []struct {
			Field   string `json:"field"`
			Message string `json:"message"`
		} `json:"causes"`
	} `json:"details"`
}

// TestBadInputs checks how the server answers requests it must refuse.
func TestBadInputs(t *testing.T) {
	s := startServer(t)
	admin, err := clientcmd.BuildConfigFromFlags("", s.Kubeconfig)
	if err != nil {
		t.Fatalf("load %s: %v", s.Kubeconfig, err)
	}
	adminHTTP, err := rest.HTTPClientFor(admin)
	if err != nil {
		t.Fatalf("admin http client: %v", err)
	}
	adminHTTP.Timeout = 30 * time.Second

	// do sends a request and returns the status code and body.
	do := func(t *testing.T, c *http.Client, method, url, contentType string, body []byte) (int, []byte) {
		t.Helper()
		req, err := http.NewRequestWithContext(t.Context(), method, url, bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Accept", "application/json")
		if contentType != "" {
			req.Header.Set("Content-Type", contentType)
		}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", method, url, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, b
	}
	// wantStatus checks that body is a Status JSON with the given code.
	wantStatus := func(t *testing.T, what string, code int, body []byte, wantCode int) status {
		t.Helper()
		var st status
		if code != wantCode {
			t.Errorf("%s: HTTP %d, want %d; body: %s", what, code, wantCode, clip(string(body)))
		}
		if err := json.Unmarshal(body, &st); err != nil {
			t.Errorf("%s: body is not JSON (%v): %s", what, err, clip(string(body)))
			return st
		}
		if st.Kind != "Status" || st.Code != wantCode || st.Status != "Failure" {
			t.Errorf("%s: Status{kind %q, status %q, code %d}, want kind Status, status Failure, code %d; body: %s",
				what, st.Kind, st.Status, st.Code, wantCode, clip(string(body)))
		}
		return st
	}
	cmURL := s.URL + "/api/v1/namespaces/default/configmaps"

	t.Run("no client certificate is 401", func(t *testing.T) {
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(admin.TLSClientConfig.CAData) {
			t.Fatalf("no CA certificate in %s", s.Kubeconfig)
		}
		c := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
			TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12},
		}}
		code, body := do(t, c, "GET", s.URL+"/api/v1/namespaces", "", nil)
		wantStatus(t, "GET /api/v1/namespaces without a client certificate", code, body, http.StatusUnauthorized)
		if bytes.Contains(body, []byte("kube-system")) {
			t.Errorf("unauthenticated GET /api/v1/namespaces leaked namespace data: %s", clip(string(body)))
		}
	})

	t.Run("plain HTTP gets no API data", func(t *testing.T) {
		c := &http.Client{Timeout: 10 * time.Second}
		url := strings.Replace(s.URL, "https://", "http://", 1) + "/api/v1/namespaces"
		resp, err := c.Get(url)
		if err != nil {
			t.Logf("GET %s: %v (refused, fine)", url, err)
			return
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		t.Logf("GET %s: HTTP %d: %s", url, resp.StatusCode, clip(string(body)))
		if resp.StatusCode >= 200 && resp.StatusCode < 300 {
			t.Errorf("GET %s: HTTP %d, want a non-2xx answer", url, resp.StatusCode)
		}
		for _, ns := range []string{"kube-system", "kube-public", "kube-node-lease", `"default"`, "NamespaceList"} {
			if strings.Contains(string(body), ns) {
				t.Errorf("GET %s: body contains %s: %s", url, ns, clip(string(body)))
			}
		}
	})

	t.Run("malformed JSON is 400", func(t *testing.T) {
		code, body := do(t, adminHTTP, "POST", cmURL, "application/json", []byte(`{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":`))
		wantStatus(t, "POST malformed JSON", code, body, http.StatusBadRequest)
	})

	t.Run("4 MiB body is 413", func(t *testing.T) {
		// A well-formed ConfigMap whose encoding is 4 MiB: the size check,
		// not the decoder, must refuse it.
		big := strings.Repeat("x", 4<<20)
		body := []byte(fmt.Sprintf(`{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"too-big"},"data":{"k":%q}}`, big))
		code, resp := do(t, adminHTTP, "POST", cmURL, "application/json", body)
		st := wantStatus(t, "POST 4 MiB ConfigMap", code, resp, http.StatusRequestEntityTooLarge)
		if st.Reason != "RequestEntityTooLarge" {
			t.Errorf("POST 4 MiB ConfigMap: reason %q, want RequestEntityTooLarge", st.Reason)
		}
		code, _ = do(t, adminHTTP, "GET", cmURL+"/too-big", "", nil)
		if code != http.StatusNotFound {
			t.Errorf("GET the too-big ConfigMap: HTTP %d, want 404", code)
		}
	})

	t.Run("invalid name is 422", func(t *testing.T) {
		code, body := do(t, adminHTTP, "POST", cmURL, "application/json", []byte(`{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"Bad_Name"}}`))
		st := wantStatus(t, "POST ConfigMap Bad_Name", code, body, http.StatusUnprocessableEntity)
		if st.Reason != "Invalid" || !strings.Contains(st.Message, "metadata.name") {
			t.Errorf("POST ConfigMap Bad_Name: reason %q message %q, want reason Invalid and a message naming metadata.name", st.Reason, st.Message)
		}
		causeOK := false
		for _, c := range st.Details.Causes {
			causeOK = causeOK || c.Field == "metadata.name"
		}
		if !causeOK {
			t.Errorf("POST ConfigMap Bad_Name: no cause with field metadata.name in %s", clip(string(body)))
		}

		kubectlPath(t)
		_, errOut, err := s.kubectl(t, "create", "configmap", "Bad_Name", "-n", "default")
		if err == nil {
			t.Fatalf("kubectl create configmap Bad_Name succeeded, want an error")
		}
		if !strings.Contains(errOut, "is invalid") || !strings.Contains(errOut, "metadata.name") {
			t.Errorf("kubectl create configmap Bad_Name: stderr %q, want it to say the ConfigMap is invalid and name metadata.name", errOut)
		}
	})

	t.Run("unknown resource", func(t *testing.T) {
		kubectlPath(t)
		_, errOut, err := s.kubectl(t, "get", "frobnicators")
		if err == nil {
			t.Fatalf("kubectl get frobnicators succeeded, want an error")
		}
		if !strings.Contains(errOut, `doesn't have a resource type "frobnicators"`) {
			t.Errorf("kubectl get frobnicators: stderr %q, want `the server doesn't have a resource type \"frobnicators\"`", errOut)
		}
	})
}
