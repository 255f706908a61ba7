// Package serviceaccount is the ServiceAccount admission plugin: it gives
// every pod an identity and the credentials to reach the API server as that
// identity (path P3).
//
// On pod creation (mutating phase) it:
//
//   - sets spec.serviceAccountName (and its deprecated twin
//     spec.serviceAccount) to "default" when the pod names none;
//   - refuses the pod (403) when the service account does not exist. A
//     missing "default" account is waited for, briefly: the controller
//     that creates it may lag behind a namespace created a moment ago;
//   - unless automountServiceAccountToken is false on the pod or, when the
//     pod leaves it unset, on the service account, adds a projected volume
//     kube-api-access-<random> with a bound token (audience: the API
//     server, 3607 s, refreshed by the kubelet), ca.crt from the ConfigMap
//     kube-root-ca.crt and the pod's namespace, and mounts it read-only at
//     /var/run/secrets/kubernetes.io/serviceaccount in every container
//     (init, regular and ephemeral) that has no mount of its own there;
//   - copies the service account's imagePullSecrets into a pod that lists
//     none.
//
// Mirror pods (annotation kubernetes.io/config.mirror) are not changed; in
// the validating phase they may not name a service account nor use
// service-account tokens, since the kubelet that creates them can fetch no
// credentials for them. Other created pods must name a service account, and
// no update may change it.
//
// The behaviour is upstream's, with the service account read from the
// shared informer cache and, on a miss, live through a loopback client.
package serviceaccount

import (
	"context"
	"errors"
	"fmt"
	"path"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	utilrand "k8s.io/apimachinery/pkg/util/rand"
	"k8s.io/apimachinery/pkg/util/sets"
	"k8s.io/apiserver/pkg/admission"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
)

// PluginName is the name of the plugin in an admission chain.
const PluginName = "ServiceAccount"

const (
	// DefaultName is the service account of a pod that names none.
	DefaultName = "default"
	// MountPath is where the credentials appear in every container.
	MountPath = "/var/run/secrets/kubernetes.io/serviceaccount"
	// VolumeNamePrefix starts the name of the projected volume; five
	// random characters follow.
	VolumeNamePrefix = "kube-api-access-"
	// TokenExpirationSeconds is the lifetime a pod's token is requested
	// with. The odd value tells the kubelet's requests apart (upstream
	// uses it to recognise tokens that are refreshed automatically).
	TokenExpirationSeconds = 3607
	// RootCAConfigMap is the ConfigMap the CA bundle is projected from,
	// and RootCAKey its key; the rootcacert controller keeps it in every
	// namespace.
	RootCAConfigMap = "kube-root-ca.crt"
	RootCAKey       = "ca.crt"

	// DefaultWait is used when Config.DefaultWait is zero.
	DefaultWait = 3 * time.Second
	// pollInterval is how often the cache is looked at while waiting for
	// the default service account.
	pollInterval = 100 * time.Millisecond
)

// Config configures the plugin.
type Config struct {
	// ServiceAccounts is the lister of the shared informer factory's
	// ServiceAccount informer. Required.
	ServiceAccounts corelisters.ServiceAccountLister
	// Synced, if set, reports whether that informer has synced; requests
	// wait for it (for at most the 10 s admission.Handler allows).
	Synced func() bool
	// Client reads a service account live when the cache does not have it
	// (the cache may not have seen a just-created account). If nil, only
	// the cache is read.
	Client kubernetes.Interface
	// DefaultWait is how long a pod waits for the "default" service account
	// of its namespace to appear before it is refused. If 0, DefaultWait
	// (3 s); if negative, a missing account is refused at once.
	DefaultWait time.Duration
}

// Plugin is the ServiceAccount admission plugin. Create it with New.
type Plugin struct {
	*admission.Handler
	accounts corelisters.ServiceAccountLister
	client   kubernetes.Interface
	wait     time.Duration
	// volumeSuffix returns the random part of a new volume's name.
	volumeSuffix func() string
}

var (
	_ admission.MutationInterface       = (*Plugin)(nil)
	_ admission.ValidationInterface     = (*Plugin)(nil)
	_ admission.InitializationValidator = (*Plugin)(nil)
)

// New returns the plugin.
func New(cfg Config) *Plugin {
	p := &Plugin{
		Handler:      admission.NewHandler(admission.Create, admission.Update),
		accounts:     cfg.ServiceAccounts,
		client:       cfg.Client,
		wait:         cfg.DefaultWait,
		volumeSuffix: func() string { return utilrand.String(5) },
	}
	if p.wait == 0 {
		p.wait = DefaultWait
	}
	if cfg.Synced != nil {
		p.SetReadyFunc(cfg.Synced)
	}
	return p
}

// ValidateInitialization reports a plugin built without a lister.
func (p *Plugin) ValidateInitialization() error {
	if p.accounts == nil {
		return errors.New("serviceaccount admission: no service account lister")
	}
	return nil
}

var podsResource = schema.GroupResource{Resource: "pods"}

// isPod reports whether a is about a pod itself (not a subresource).
func isPod(a admission.Attributes) bool {
	return a.GetResource().GroupResource() == podsResource && a.GetSubresource() == ""
}

func isMirror(pod *corev1.Pod) bool {
	_, ok := pod.Annotations[corev1.MirrorPodAnnotationKey]
	return ok
}

// Admit sets a created pod's service account and mounts its credentials.
func (p *Plugin) Admit(ctx context.Context, a admission.Attributes, _ admission.ObjectInterfaces) error {
	if a.GetOperation() != admission.Create || !isPod(a) {
		return nil
	}
	pod, ok := a.GetObject().(*corev1.Pod)
	if !ok {
		return apierrors.NewBadRequest(fmt.Sprintf("expected a Pod, got %T", a.GetObject()))
	}
	if isMirror(pod) {
		// The kubelet compares a mirror pod with its static pod; any
		// change would make it delete and recreate the mirror pod.
		return nil
	}
	if !p.WaitForReady() {
		return admission.NewForbidden(a, errors.New("not yet ready to handle request: the service account cache has not synced"))
	}

	if pod.Spec.ServiceAccountName == "" {
		pod.Spec.ServiceAccountName = pod.Spec.DeprecatedServiceAccount
	}
	if pod.Spec.ServiceAccountName == "" {
		pod.Spec.ServiceAccountName = DefaultName
	}
	pod.Spec.DeprecatedServiceAccount = pod.Spec.ServiceAccountName

	ns, name := a.GetNamespace(), pod.Spec.ServiceAccountName
	sa, err := p.lookup(ctx, ns, name)
	if apierrors.IsNotFound(err) {
		return admission.NewForbidden(a, fmt.Errorf("error looking up service account %s/%s: %w", ns, name, err))
	}
	if err != nil {
		return apierrors.NewInternalError(fmt.Errorf("error looking up service account %s/%s: %w", ns, name, err))
	}

	if automount(pod, sa) {
		p.mountToken(pod)
	}
	if len(pod.Spec.ImagePullSecrets) == 0 && len(sa.ImagePullSecrets) > 0 {
		pod.Spec.ImagePullSecrets = make([]corev1.LocalObjectReference, len(sa.ImagePullSecrets))
		for i, s := range sa.ImagePullSecrets {
			pod.Spec.ImagePullSecrets[i] = corev1.LocalObjectReference{Name: s.Name}
		}
	}
	return nil
}

// Validate checks what the mutating phase and later plugins left: mirror
// pods use no service account, other pods name one, and no update changes
// it.
func (p *Plugin) Validate(_ context.Context, a admission.Attributes, _ admission.ObjectInterfaces) error {
	if a.GetResource().GroupResource() != podsResource {
		return nil
	}
	switch a.GetOperation() {
	case admission.Create:
		if a.GetSubresource() != "" {
			return nil // bindings, evictions
		}
		pod, ok := a.GetObject().(*corev1.Pod)
		if !ok {
			return apierrors.NewBadRequest(fmt.Sprintf("expected a Pod, got %T", a.GetObject()))
		}
		if isMirror(pod) {
			return validateMirror(a, pod)
		}
		if pod.Spec.ServiceAccountName == "" {
			return admission.NewForbidden(a, fmt.Errorf("no service account specified for pod %s/%s", a.GetNamespace(), pod.Name))
		}
	case admission.Update:
		// The pod itself and the subresources that carry a whole pod
		// (status, ephemeralcontainers).
		pod, ok := a.GetObject().(*corev1.Pod)
		old, oldOK := a.GetOldObject().(*corev1.Pod)
		if !ok || !oldOK {
			return nil
		}
		if pod.Spec.ServiceAccountName != old.Spec.ServiceAccountName {
			return admission.NewForbidden(a, fmt.Errorf("spec.serviceAccountName may not be changed (from %q to %q); delete the pod and create it anew", old.Spec.ServiceAccountName, pod.Spec.ServiceAccountName))
		}
	}
	return nil
}

// validateMirror refuses a mirror pod that would need API credentials.
func validateMirror(a admission.Attributes, pod *corev1.Pod) error {
	if pod.Spec.ServiceAccountName != "" || pod.Spec.DeprecatedServiceAccount != "" {
		return admission.NewForbidden(a, errors.New("a mirror pod may not reference service accounts"))
	}
	for _, v := range pod.Spec.Volumes {
		if v.Projected == nil {
			continue
		}
		for _, src := range v.Projected.Sources {
			if src.ServiceAccountToken != nil {
				return admission.NewForbidden(a, fmt.Errorf("a mirror pod may not use service account tokens (volume %q)", v.Name))
			}
		}
	}
	return nil
}

// lookup returns the service account from the cache, or else read live;
// the default account is waited for up to p.wait. A missing account is an
// error for which apierrors.IsNotFound is true.
func (p *Plugin) lookup(ctx context.Context, ns, name string) (*corev1.ServiceAccount, error) {
	sa, err := p.cachedOrLive(ctx, ns, name)
	if !apierrors.IsNotFound(err) || name != DefaultName || p.wait < 0 {
		return sa, err
	}
	// The controller creates the default account when the namespace
	// appears; watch the cache for it for a little while, then ask once
	// more.
	deadline := time.NewTimer(p.wait)
	defer deadline.Stop()
	tick := time.NewTicker(pollInterval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("waiting for the service account: %w", ctx.Err())
		case <-deadline.C:
			return p.cachedOrLive(ctx, ns, name)
		case <-tick.C:
		}
		if sa, err := p.accounts.ServiceAccounts(ns).Get(name); err == nil {
			return sa, nil
		}
	}
}

// cachedOrLive reads the account from the cache and, on a miss, live.
func (p *Plugin) cachedOrLive(ctx context.Context, ns, name string) (*corev1.ServiceAccount, error) {
	sa, err := p.accounts.ServiceAccounts(ns).Get(name)
	if err == nil || !apierrors.IsNotFound(err) {
		return sa, err
	}
	notFound := apierrors.NewNotFound(schema.GroupResource{Resource: "serviceaccount"}, name)
	if p.client == nil {
		return nil, notFound
	}
	sa, err = p.client.CoreV1().ServiceAccounts(ns).Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil, notFound
	}
	return sa, err
}

// automount reports whether the pod gets the token volume: the pod's
// setting wins, then the service account's, and the default is yes.
func automount(pod *corev1.Pod, sa *corev1.ServiceAccount) bool {
	if pod.Spec.AutomountServiceAccountToken != nil {
		return *pod.Spec.AutomountServiceAccountToken
	}
	if sa.AutomountServiceAccountToken != nil {
		return *sa.AutomountServiceAccountToken
	}
	return true
}

// mountToken mounts the token volume in every container without a mount at
// MountPath, adding the volume if one needs it and the pod has none yet
// (a pod spec copied from another pod already has one).
func (p *Plugin) mountToken(pod *corev1.Pod) {
	volumeName := ""
	names := sets.New[string]()
	for _, v := range pod.Spec.Volumes {
		names.Insert(v.Name)
		if volumeName == "" && strings.HasPrefix(v.Name, VolumeNamePrefix) {
			volumeName = v.Name
		}
	}
	hasVolume := volumeName != ""
	for !hasVolume && (volumeName == "" || names.Has(volumeName)) {
		volumeName = VolumeNamePrefix + p.volumeSuffix()
	}

	mount := corev1.VolumeMount{Name: volumeName, ReadOnly: true, MountPath: MountPath}
	needed := false
	add := func(mounts *[]corev1.VolumeMount) {
		for _, m := range *mounts {
			if path.Clean(m.MountPath) == MountPath {
				return
			}
		}
		*mounts = append(*mounts, mount)
		needed = true
	}
	for i := range pod.Spec.InitContainers {
		add(&pod.Spec.InitContainers[i].VolumeMounts)
	}
	for i := range pod.Spec.Containers {
		add(&pod.Spec.Containers[i].VolumeMounts)
	}
	for i := range pod.Spec.EphemeralContainers {
		add(&pod.Spec.EphemeralContainers[i].VolumeMounts)
	}
	if needed && !hasVolume {
		pod.Spec.Volumes = append(pod.Spec.Volumes, TokenVolume(volumeName))
	}
}

// TokenVolume returns the projected volume that holds a pod's credentials:
// token, ca.crt and namespace, each readable by all (0644) as upstream.
func TokenVolume(name string) corev1.Volume {
	expiration := int64(TokenExpirationSeconds)
	mode := int32(0o644)
	return corev1.Volume{
		Name: name,
		VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{
			DefaultMode: &mode,
			Sources: []corev1.VolumeProjection{
				{ServiceAccountToken: &corev1.ServiceAccountTokenProjection{
					Path:              "token",
					ExpirationSeconds: &expiration,
				}},
				{ConfigMap: &corev1.ConfigMapProjection{
					LocalObjectReference: corev1.LocalObjectReference{Name: RootCAConfigMap},
					Items:                []corev1.KeyToPath{{Key: RootCAKey, Path: RootCAKey}},
				}},
				{DownwardAPI: &corev1.DownwardAPIProjection{
					Items: []corev1.DownwardAPIVolumeFile{{
						Path:     "namespace",
						FieldRef: &corev1.ObjectFieldSelector{APIVersion: "v1", FieldPath: "metadata.namespace"},
					}},
				}},
			},
		}},
	}
}
