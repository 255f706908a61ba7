package integration

import (
	"fmt"
	"net/http"
	"slices"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"tether/test/framework"
)

func TestList(t *testing.T) {
	t.Parallel()
	c := framework.StartCluster(t)
	client := fastClient(t, c)

	t.Run("Pagination", func(t *testing.T) {
		for _, ct := range contentTypes {
			t.Run(ct.name, func(t *testing.T) {
				testPagination(t, newClient(t, c, ct.contentType, ct.accept))
			})
		}
	})

	t.Run("LabelSelector", func(t *testing.T) {
		ctx := t.Context()
		ns := createNamespace(t, client, "labels")
		for name, labels := range map[string]map[string]string{
			"web-front": {"app": "web", "tier": "front"},
			"web-back":  {"app": "web", "tier": "back"},
			"db":        {"app": "db"},
			"plain":     nil,
		} {
			if _, err := client.CoreV1().ConfigMaps(ns).Create(ctx, &corev1.ConfigMap{
				ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels},
			}, metav1.CreateOptions{}); err != nil {
				t.Fatalf("Create(%s) = %v", name, err)
			}
		}
		tests := []struct {
			selector string
			want     []string
		}{
			{"", []string{"db", "plain", "web-back", "web-front"}},
			{"app=web", []string{"web-back", "web-front"}},
			{"app==db", []string{"db"}},
			{"app!=web", []string{"db", "plain"}},
			{"app in (web,db)", []string{"db", "web-back", "web-front"}},
			{"app notin (web)", []string{"db", "plain"}},
			{"tier", []string{"web-back", "web-front"}},
			{"!tier", []string{"db", "plain"}},
			{"app=web,tier=back", []string{"web-back"}},
			{"app=nothing", nil},
		}
		for _, tc := range tests {
			t.Run(tc.selector, func(t *testing.T) {
				list, err := client.CoreV1().ConfigMaps(ns).List(ctx, metav1.ListOptions{LabelSelector: tc.selector})
				if err != nil {
					t.Fatalf("List(labelSelector %q) = %v", tc.selector, err)
				}
				if got := configMapNames(t, list); !slices.Equal(got, tc.want) {
					t.Errorf("List(labelSelector %q) = %v (without %s), want %v", tc.selector, got, rootCAConfigMap, tc.want)
				}
			})
		}
		t.Run("Paginated", func(t *testing.T) {
			var got []string
			opts := metav1.ListOptions{LabelSelector: "app", Limit: 1}
			for page := 0; ; page++ {
				if page > 4 {
					t.Fatalf("List(labelSelector app, limit 1) still has a continue token after %d pages", page)
				}
				list, err := client.CoreV1().ConfigMaps(ns).List(ctx, opts)
				if err != nil {
					t.Fatalf("List(labelSelector app, limit 1, page %d) = %v", page, err)
				}
				got = append(got, itemNames(t, list)...)
				if list.Continue == "" {
					break
				}
				opts.Continue = list.Continue
			}
			slices.Sort(got)
			if want := []string{"db", "web-back", "web-front"}; !slices.Equal(got, want) {
				t.Errorf("List(labelSelector app, limit 1) over all pages = %v, want %v", got, want)
			}
		})
		t.Run("DeleteCollection", func(t *testing.T) {
			cms := client.CoreV1().ConfigMaps(ns)
			if err := cms.DeleteCollection(ctx, metav1.DeleteOptions{}, metav1.ListOptions{LabelSelector: "tier=back"}); err != nil {
				t.Fatalf("DeleteCollection(labelSelector tier=back) = %v", err)
			}
			list, err := cms.List(ctx, metav1.ListOptions{})
			if err != nil {
				t.Fatalf("List() = %v", err)
			}
			if got, want := configMapNames(t, list), []string{"db", "plain", "web-front"}; !slices.Equal(got, want) {
				t.Errorf("List() after DeleteCollection(tier=back) = %v (without %s), want %v", got, rootCAConfigMap, want)
			}
		})
		t.Run("invalid", func(t *testing.T) {
			_, err := client.CoreV1().ConfigMaps(ns).List(ctx, metav1.ListOptions{LabelSelector: "app in web"})
			if !apierrors.IsBadRequest(err) {
				t.Errorf("List(labelSelector %q) = %v, want 400 BadRequest", "app in web", err)
			}
		})
	})

	t.Run("FieldSelector", func(t *testing.T) {
		testFieldSelectors(t, client)
	})
}

func testPagination(t *testing.T, client kubernetes.Interface) {
	ctx := t.Context()
	ns := createNamespace(t, client, "pages")
	cms := client.CoreV1().ConfigMaps(ns)
	// Once the controller has created the namespace's kube-root-ca.crt,
	// the namespace holds exactly it and the 25 ConfigMaps created here.
	waitRootCA(t, client, ns)
	want := []string{rootCAConfigMap}
	for i := range 25 {
		name := fmt.Sprintf("cm-%02d", i)
		want = append(want, name)
		if _, err := cms.Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{}); err != nil {
			t.Fatalf("Create(%s) = %v", name, err)
		}
	}
	slices.Sort(want)

	var got []string
	var sizes []int
	var rv string
	opts := metav1.ListOptions{Limit: 10}
	for page := 0; ; page++ {
		if page > 3 {
			t.Fatalf("List(limit 10) still has a continue token after %d pages", page)
		}
		list, err := cms.List(ctx, opts)
		if err != nil {
			t.Fatalf("List(limit 10, page %d) = %v", page, err)
		}
		sizes = append(sizes, len(list.Items))
		for _, cm := range list.Items {
			got = append(got, cm.Name)
		}
		if page == 0 {
			rv = list.ResourceVersion
			if r := list.RemainingItemCount; r == nil || *r != 16 {
				t.Errorf("List(limit 10, page 0).remainingItemCount = %v, want 16", derefOrNil(r))
			}
		} else if list.ResourceVersion != rv {
			t.Errorf("List(limit 10, page %d).resourceVersion = %s, want %s (that of the first page)", page, list.ResourceVersion, rv)
		}
		if list.Continue == "" {
			break
		}
		opts.Continue = list.Continue
	}
	if want := []int{10, 10, 6}; !slices.Equal(sizes, want) {
		t.Errorf("List(limit 10) page sizes = %v, want %v", sizes, want)
	}
	slices.Sort(got)
	if !slices.Equal(got, want) {
		t.Errorf("List(limit 10) names over all pages = %v, want each of %v once", got, want)
	}

	// A continue token lists the snapshot of the first page: objects
	// created since do not appear.
	first, err := cms.List(ctx, metav1.ListOptions{Limit: 24})
	if err != nil {
		t.Fatalf("List(limit 24) = %v", err)
	}
	if _, err := cms.Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "cm-99"}}, metav1.CreateOptions{}); err != nil {
		t.Fatalf("Create(cm-99) = %v", err)
	}
	rest, err := cms.List(ctx, metav1.ListOptions{Limit: 24, Continue: first.Continue})
	if err != nil {
		t.Fatalf("List(limit 24, continue) = %v", err)
	}
	if got, want := itemNames(t, rest), []string{"cm-24", rootCAConfigMap}; !slices.Equal(got, want) {
		t.Errorf("List(limit 24, continue) after creating cm-99 = %v, want %v", got, want)
	}
}

func derefOrNil[T any](p *T) any {
	if p == nil {
		return nil
	}
	return *p
}

func testFieldSelectors(t *testing.T, client kubernetes.Interface) {
	ctx := t.Context()
	ns := createNamespace(t, client, "fields")

	// Pods: on-node-1 runs, on-node-2 succeeded, unscheduled is pending.
	pods := client.CoreV1().Pods(ns)
	for _, p := range []struct {
		name, node string
		phase      corev1.PodPhase
	}{
		{"on-node-1", "node-1", corev1.PodRunning},
		{"on-node-2", "node-2", corev1.PodSucceeded},
		{"unscheduled", "", ""},
	} {
		obj := newPod(p.name, "busybox:1.36")
		obj.Spec.NodeName = p.node
		created, err := pods.Create(ctx, obj, metav1.CreateOptions{})
		if err != nil {
			t.Fatalf("Create(pod %s) = %v", p.name, err)
		}
		if p.phase == "" {
			continue
		}
		created.Status.Phase = p.phase
		if _, err := pods.UpdateStatus(ctx, created, metav1.UpdateOptions{}); err != nil {
			t.Fatalf("UpdateStatus(pod %s, phase %s) = %v", p.name, p.phase, err)
		}
	}

	secrets := client.CoreV1().Secrets(ns)
	for _, s := range []*corev1.Secret{
		{ObjectMeta: metav1.ObjectMeta{Name: "opaque"}, Type: corev1.SecretTypeOpaque},
		{ObjectMeta: metav1.ObjectMeta{Name: "custom"}, Type: "tether.test/custom"},
		{ObjectMeta: metav1.ObjectMeta{Name: "basic"}, Type: corev1.SecretTypeBasicAuth, Data: map[string][]byte{"username": []byte("u"), "password": []byte("p")}},
	} {
		if _, err := secrets.Create(ctx, s, metav1.CreateOptions{}); err != nil {
			t.Fatalf("Create(secret %s) = %v", s.Name, err)
		}
	}

	events := client.CoreV1().Events(ns)
	now := metav1.NewTime(time.Now())
	for _, e := range []struct{ name, kind, object string }{
		{"about-pod-a", "Pod", "pod-a"},
		{"about-pod-b", "Pod", "pod-b"},
		{"about-node-a", "Node", "pod-a"},
	} {
		if _, err := events.Create(ctx, &corev1.Event{
			ObjectMeta:     metav1.ObjectMeta{Name: e.name},
			InvolvedObject: corev1.ObjectReference{Kind: e.kind, Name: e.object, Namespace: ns},
			Reason:         "Test", Message: "m", Type: corev1.EventTypeNormal,
			FirstTimestamp: now, LastTimestamp: now, Count: 1,
		}, metav1.CreateOptions{}); err != nil {
			t.Fatalf("Create(event %s) = %v", e.name, err)
		}
	}

	tests := []struct {
		resource string
		selector string
		want     []string
	}{
		{"pods", "spec.nodeName=node-1", []string{"on-node-1"}},
		{"pods", "spec.nodeName=", []string{"unscheduled"}},
		{"pods", "spec.nodeName!=", []string{"on-node-1", "on-node-2"}},
		{"pods", "status.phase!=Running", []string{"on-node-2", "unscheduled"}},
		{"pods", "status.phase=Pending", []string{"unscheduled"}},
		{"pods", "status.phase!=Running,status.phase!=Succeeded", []string{"unscheduled"}},
		{"pods", "metadata.name=on-node-2", []string{"on-node-2"}},
		{"secrets", "type=Opaque", []string{"opaque"}},
		{"secrets", "type=tether.test/custom", []string{"custom"}},
		{"secrets", "type!=Opaque", []string{"basic", "custom"}},
		{"events", "involvedObject.name=pod-a", []string{"about-node-a", "about-pod-a"}},
		{"events", "involvedObject.kind=Pod,involvedObject.name=pod-a", []string{"about-pod-a"}},
		{"events", "involvedObject.name=pod-b", []string{"about-pod-b"}},
	}
	for _, tc := range tests {
		t.Run(tc.resource+"/"+tc.selector, func(t *testing.T) {
			opts := metav1.ListOptions{FieldSelector: tc.selector}
			var got []string
			switch tc.resource {
			case "pods":
				list, err := pods.List(ctx, opts)
				if err != nil {
					t.Fatalf("List(pods, fieldSelector %q) = %v", tc.selector, err)
				}
				got = itemNames(t, list)
			case "secrets":
				list, err := secrets.List(ctx, opts)
				if err != nil {
					t.Fatalf("List(secrets, fieldSelector %q) = %v", tc.selector, err)
				}
				got = itemNames(t, list)
			case "events":
				list, err := events.List(ctx, opts)
				if err != nil {
					t.Fatalf("List(events, fieldSelector %q) = %v", tc.selector, err)
				}
				got = itemNames(t, list)
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("List(%s, fieldSelector %q) = %v, want %v", tc.resource, tc.selector, got, tc.want)
			}
		})
	}

	t.Run("unsupported", func(t *testing.T) {
		_, err := client.CoreV1().ConfigMaps(ns).List(ctx, metav1.ListOptions{FieldSelector: "data.k=v"})
		if !apierrors.IsBadRequest(err) || statusCode(err) != http.StatusBadRequest {
			t.Errorf("List(configmaps, fieldSelector %q) = %v, want 400 BadRequest", "data.k=v", err)
		}
	})
}
