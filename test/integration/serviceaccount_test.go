package integration

import (
	"fmt"
	"maps"
	"net/http"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"

	"tether/test/framework"
)

// Path P3: every namespace gets the default service account and the CA
// bundle, and every pod its service account and credentials.

const (
	// perNamespaceObjects bounds how long the controllers take to create
	// or restore a namespace's default account and kube-root-ca.crt.
	perNamespaceObjects = 3 * time.Second
	// boundTokenDies bounds how long a pod-bound token keeps working after
	// its pod is deleted: the API server caches a verified token for up to
	// 10 s, as upstream does.
	boundTokenDies = 20 * time.Second

	saMountPath = "/var/run/secrets/kubernetes.io/serviceaccount"
)

func TestServiceAccountCredentials(t *testing.T) {
	t.Parallel()
	c := framework.StartCluster(t)
	client := fastClient(t, c)
	caPEM := string(c.ControlPlane.PKI().ServerCA.CertPEM())

	// checkRootCA reports what is wrong with ns/kube-root-ca.crt, if
	// anything; the UID of the ConfigMap it looked at is returned.
	checkRootCA := func(t *testing.T, ns string) (types.UID, error) {
		cm, err := client.CoreV1().ConfigMaps(ns).Get(t.Context(), "kube-root-ca.crt", metav1.GetOptions{})
		if err != nil {
			return "", err
		}
		if want := map[string]string{"ca.crt": caPEM}; !maps.Equal(cm.Data, want) {
			return cm.UID, fmt.Errorf("configmap %s/kube-root-ca.crt data has keys %v, want exactly ca.crt = the server CA", ns, slices.Sorted(maps.Keys(cm.Data)))
		}
		if cm.Annotations["kubernetes.io/description"] == "" {
			return cm.UID, fmt.Errorf("configmap %s/kube-root-ca.crt has no kubernetes.io/description annotation", ns)
		}
		return cm.UID, nil
	}
	defaultAccount := func(t *testing.T, ns string) (types.UID, error) {
		sa, err := client.CoreV1().ServiceAccounts(ns).Get(t.Context(), "default", metav1.GetOptions{})
		if err != nil {
			return "", err
		}
		return sa.UID, nil
	}

	t.Run("NamespaceObjects", func(t *testing.T) {
		ctx := t.Context()
		ns := createNamespace(t, client, "sa-objects")
		var saUID, cmUID types.UID
		framework.Eventually(t, perNamespaceObjects, func() (bool, error) {
			var err error
			if saUID, err = defaultAccount(t, ns); err != nil {
				return false, err
			}
			cmUID, err = checkRootCA(t, ns)
			return err == nil, err
		})

		// The system namespaces have them too.
		for _, sys := range []string{"default", "kube-system", "kube-public", "kube-node-lease"} {
			framework.Eventually(t, perNamespaceObjects, func() (bool, error) {
				if _, err := defaultAccount(t, sys); err != nil {
					return false, err
				}
				_, err := checkRootCA(t, sys)
				return err == nil, err
			})
		}

		// Deleted: recreated.
		if err := client.CoreV1().ServiceAccounts(ns).Delete(ctx, "default", metav1.DeleteOptions{}); err != nil {
			t.Fatalf("Delete(serviceaccount %s/default) = %v", ns, err)
		}
		if err := client.CoreV1().ConfigMaps(ns).Delete(ctx, "kube-root-ca.crt", metav1.DeleteOptions{}); err != nil {
			t.Fatalf("Delete(configmap %s/kube-root-ca.crt) = %v", ns, err)
		}
		framework.Eventually(t, perNamespaceObjects, func() (bool, error) {
			uid, err := defaultAccount(t, ns)
			if err != nil {
				return false, err
			}
			if uid == saUID {
				return false, fmt.Errorf("serviceaccount %s/default still has the deleted uid", ns)
			}
			uid, err = checkRootCA(t, ns)
			if err == nil && uid == cmUID {
				err = fmt.Errorf("configmap %s/kube-root-ca.crt still has the deleted uid", ns)
			}
			return err == nil, err
		})

		// Edited: restored.
		cm, err := client.CoreV1().ConfigMaps(ns).Get(ctx, "kube-root-ca.crt", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		cm.Data = map[string]string{"ca.crt": "-----BEGIN CERTIFICATE-----\nnot ours\n-----END CERTIFICATE-----\n", "extra": "x"}
		delete(cm.Annotations, "kubernetes.io/description")
		if _, err := client.CoreV1().ConfigMaps(ns).Update(ctx, cm, metav1.UpdateOptions{}); err != nil {
			t.Fatalf("Update(configmap %s/kube-root-ca.crt) = %v", ns, err)
		}
		framework.Eventually(t, perNamespaceObjects, func() (bool, error) {
			_, err := checkRootCA(t, ns)
			return err == nil, err
		})
	})

	t.Run("PodDefaults", func(t *testing.T) {
		// Created right after its namespace: admission waits for the
		// default account rather than refusing the pod.
		ns := createNamespace(t, client, "sa-pods")
		pod, err := client.CoreV1().Pods(ns).Create(t.Context(), testPod("web", func(p *corev1.Pod) {
			p.Spec.InitContainers = []corev1.Container{{Name: "init", Image: "busybox"}}
			p.Spec.Containers = append(p.Spec.Containers, corev1.Container{Name: "sidecar", Image: "busybox",
				VolumeMounts: []corev1.VolumeMount{{Name: "data", MountPath: "/data"}}})
			p.Spec.Volumes = []corev1.Volume{{Name: "data", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}}
		}), metav1.CreateOptions{})
		if err != nil {
			t.Fatalf("Create(pod %s/web) = %v", ns, err)
		}
		got, err := client.CoreV1().Pods(ns).Get(t.Context(), pod.Name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		for what, p := range map[string]*corev1.Pod{"created": pod, "read back": got} {
			checkCredentials(t, what, p)
		}
	})

	t.Run("NoAutomount", func(t *testing.T) {
		ns := createNamespace(t, client, "sa-nomount")
		no := false
		pod, err := client.CoreV1().Pods(ns).Create(t.Context(), testPod("quiet", func(p *corev1.Pod) {
			p.Spec.AutomountServiceAccountToken = &no
		}), metav1.CreateOptions{})
		if err != nil {
			t.Fatalf("Create(pod %s/quiet) = %v", ns, err)
		}
		if pod.Spec.ServiceAccountName != "default" {
			t.Errorf("spec.serviceAccountName = %q, want default", pod.Spec.ServiceAccountName)
		}
		if len(pod.Spec.Volumes) != 0 || len(pod.Spec.Containers[0].VolumeMounts) != 0 {
			t.Errorf("pod with automountServiceAccountToken: false got volumes %+v and mounts %+v, want none",
				pod.Spec.Volumes, pod.Spec.Containers[0].VolumeMounts)
		}

		// The account's setting counts when the pod has none.
		if _, err := client.CoreV1().ServiceAccounts(ns).Create(t.Context(), &corev1.ServiceAccount{
			ObjectMeta:                   metav1.ObjectMeta{Name: "batch"},
			AutomountServiceAccountToken: &no,
		}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		pod, err = client.CoreV1().Pods(ns).Create(t.Context(), testPod("batch", func(p *corev1.Pod) {
			p.Spec.ServiceAccountName = "batch"
		}), metav1.CreateOptions{})
		if err != nil {
			t.Fatalf("Create(pod %s/batch) = %v", ns, err)
		}
		if len(pod.Spec.Volumes) != 0 {
			t.Errorf("pod of an account with automountServiceAccountToken: false got volumes %+v, want none", pod.Spec.Volumes)
		}
	})

	t.Run("MissingAccount", func(t *testing.T) {
		ns := createNamespace(t, client, "sa-missing")
		_, err := client.CoreV1().Pods(ns).Create(t.Context(), testPod("orphan", func(p *corev1.Pod) {
			p.Spec.ServiceAccountName = "ghost"
		}), metav1.CreateOptions{})
		if !apierrors.IsForbidden(err) || statusCode(err) != http.StatusForbidden {
			t.Fatalf("Create(pod naming a missing service account) = %v (code %d), want 403 Forbidden", err, statusCode(err))
		}
		if want := fmt.Sprintf(`service account %s/ghost: serviceaccount "ghost" not found`, ns); !strings.Contains(err.Error(), want) {
			t.Errorf("Create(pod naming a missing service account) = %q, want it to contain %q", err, want)
		}
		if _, err := client.CoreV1().Pods(ns).Get(t.Context(), "orphan", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
			t.Errorf("Get(refused pod) = %v, want 404", err)
		}
	})

	t.Run("BoundTokenDiesWithPod", func(t *testing.T) {
		ctx := t.Context()
		ns := createNamespace(t, client, "sa-token")
		pod, err := client.CoreV1().Pods(ns).Create(ctx, testPod("holder"), metav1.CreateOptions{})
		if err != nil {
			t.Fatalf("Create(pod %s/holder) = %v", ns, err)
		}
		tr, err := client.CoreV1().ServiceAccounts(ns).CreateToken(ctx, "default", &authenticationv1.TokenRequest{
			Spec: authenticationv1.TokenRequestSpec{BoundObjectRef: &authenticationv1.BoundObjectReference{
				Kind: "Pod", APIVersion: "v1", Name: pod.Name, UID: pod.UID,
			}},
		}, metav1.CreateOptions{})
		if err != nil {
			t.Fatalf("CreateToken(%s/default bound to pod holder) = %v", ns, err)
		}
		token := tr.Status.Token

		review := func() (*authenticationv1.TokenReview, error) {
			return client.AuthenticationV1().TokenReviews().Create(ctx, &authenticationv1.TokenReview{
				Spec: authenticationv1.TokenReviewSpec{Token: token},
			}, metav1.CreateOptions{})
		}
		rv, err := review()
		if err != nil {
			t.Fatalf("TokenReview = %v", err)
		}
		st := rv.Status
		if !st.Authenticated {
			t.Fatalf("TokenReview of a live pod's token: not authenticated (%s)", st.Error)
		}
		if want := "system:serviceaccount:" + ns + ":default"; st.User.Username != want {
			t.Errorf("TokenReview user = %q, want %q", st.User.Username, want)
		}
		for _, g := range []string{"system:serviceaccounts", "system:serviceaccounts:" + ns, "system:authenticated"} {
			if !slices.Contains(st.User.Groups, g) {
				t.Errorf("TokenReview groups = %v, want %s among them", st.User.Groups, g)
			}
		}
		wantExtra := map[string]authenticationv1.ExtraValue{
			"authentication.kubernetes.io/pod-name": {pod.Name},
			"authentication.kubernetes.io/pod-uid":  {string(pod.UID)},
		}
		for k, v := range wantExtra {
			if got := st.User.Extra[k]; !reflect.DeepEqual(got, v) {
				t.Errorf("TokenReview extra[%s] = %v, want %v", k, got, v)
			}
		}

		tokenClient, err := kubernetes.NewForConfig(tokenConfig(c, token))
		if err != nil {
			t.Fatal(err)
		}
		self, err := tokenClient.AuthenticationV1().SelfSubjectReviews().Create(ctx, &authenticationv1.SelfSubjectReview{}, metav1.CreateOptions{})
		if err != nil {
			t.Fatalf("SelfSubjectReview with the token = %v", err)
		}
		if got := self.Status.UserInfo.Username; got != "system:serviceaccount:"+ns+":default" {
			t.Errorf("SelfSubjectReview user = %q, want the default account", got)
		}

		if err := client.CoreV1().Pods(ns).Delete(ctx, pod.Name, metav1.DeleteOptions{}); err != nil {
			t.Fatalf("Delete(pod %s/holder) = %v", ns, err)
		}
		framework.Eventually(t, boundTokenDies, func() (bool, error) {
			rv, err := review()
			if err != nil {
				return false, err
			}
			if rv.Status.Authenticated {
				return false, fmt.Errorf("token of deleted pod still authenticates as %s", rv.Status.User.Username)
			}
			return true, nil
		})
		_, err = tokenClient.AuthenticationV1().SelfSubjectReviews().Create(ctx, &authenticationv1.SelfSubjectReview{}, metav1.CreateOptions{})
		if !apierrors.IsUnauthorized(err) || statusCode(err) != http.StatusUnauthorized {
			t.Errorf("request with the token of a deleted pod = %v (code %d), want 401", err, statusCode(err))
		}
	})
}

// testPod returns a pod named name with one container; mods change it.
func testPod(name string, mods ...func(*corev1.Pod)) *corev1.Pod {
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "nginx"}}},
	}
	for _, m := range mods {
		m(p)
	}
	return p
}

// checkCredentials checks the service account, volume and mounts the
// ServiceAccount admission plugin gives a pod that names no account.
func checkCredentials(t *testing.T, what string, pod *corev1.Pod) {
	t.Helper()
	if pod.Spec.ServiceAccountName != "default" || pod.Spec.DeprecatedServiceAccount != "default" {
		t.Errorf("%s: spec.serviceAccountName, spec.serviceAccount = %q, %q; want default, default", what, pod.Spec.ServiceAccountName, pod.Spec.DeprecatedServiceAccount)
	}
	var vol *corev1.Volume
	for i, v := range pod.Spec.Volumes {
		if strings.HasPrefix(v.Name, "kube-api-access-") {
			if vol != nil {
				t.Errorf("%s: more than one kube-api-access volume: %s, %s", what, vol.Name, v.Name)
			}
			vol = &pod.Spec.Volumes[i]
		}
	}
	if vol == nil {
		t.Fatalf("%s: no kube-api-access-* volume among %+v", what, pod.Spec.Volumes)
	}
	suffix := strings.TrimPrefix(vol.Name, "kube-api-access-")
	if len(suffix) != 5 || strings.Trim(suffix, "abcdefghijklmnopqrstuvwxyz0123456789") != "" {
		t.Errorf("%s: volume name %q, want kube-api-access-<5 lowercase alphanumerics>", what, vol.Name)
	}
	expiration, mode := int64(3607), int32(0o644)
	want := corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{
		DefaultMode: &mode,
		Sources: []corev1.VolumeProjection{
			{ServiceAccountToken: &corev1.ServiceAccountTokenProjection{Path: "token", ExpirationSeconds: &expiration}},
			{ConfigMap: &corev1.ConfigMapProjection{
				LocalObjectReference: corev1.LocalObjectReference{Name: "kube-root-ca.crt"},
				Items:                []corev1.KeyToPath{{Key: "ca.crt", Path: "ca.crt"}},
			}},
			{DownwardAPI: &corev1.DownwardAPIProjection{Items: []corev1.DownwardAPIVolumeFile{{
				Path: "namespace", FieldRef: &corev1.ObjectFieldSelector{APIVersion: "v1", FieldPath: "metadata.namespace"},
			}}}},
		},
	}}
	if !reflect.DeepEqual(vol.VolumeSource, want) {
		t.Errorf("%s: volume %s = %+v,\nwant %+v", what, vol.Name, vol.VolumeSource.Projected, want.Projected)
	}
	mount := corev1.VolumeMount{Name: vol.Name, ReadOnly: true, MountPath: saMountPath}
	for _, cs := range [][]corev1.Container{pod.Spec.InitContainers, pod.Spec.Containers} {
		for _, ctr := range cs {
			var at []corev1.VolumeMount
			for _, m := range ctr.VolumeMounts {
				if m.MountPath == saMountPath {
					at = append(at, m)
				}
			}
			if !reflect.DeepEqual(at, []corev1.VolumeMount{mount}) {
				t.Errorf("%s: container %s mounts at %s: %+v, want exactly %+v", what, ctr.Name, saMountPath, at, mount)
			}
		}
	}
	// Mounts the pod had stay.
	for _, ctr := range pod.Spec.Containers {
		if ctr.Name == "sidecar" && (len(ctr.VolumeMounts) != 2 || ctr.VolumeMounts[0].Name != "data") {
			t.Errorf("%s: container sidecar mounts = %+v, want data then the token", what, ctr.VolumeMounts)
		}
	}
}
