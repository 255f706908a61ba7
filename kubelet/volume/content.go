package volume

import (
	"context"
	"fmt"
	"io/fs"
	"math"
	"sort"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// defaultFileMode is the mode of a file whose source sets none, the API's
// default for configMap, secret, downwardAPI and projected volumes.
const defaultFileMode fs.FileMode = 0o644

// fileMode picks an item's mode, else the volume's default, else 0644.
func fileMode(item, def *int32) fs.FileMode {
	switch {
	case item != nil:
		return fs.FileMode(*item) & fs.ModePerm
	case def != nil:
		return fs.FileMode(*def) & fs.ModePerm
	}
	return defaultFileMode
}

// notFoundError names a missing API object.
type notFoundError struct {
	kind, name string
	err        error
}

func (e *notFoundError) Error() string { return fmt.Sprintf("%s %q not found", e.kind, e.name) }
func (e *notFoundError) Unwrap() error { return e.err }

// keyedData is the key→bytes view shared by configMaps and secrets.
type keyedData map[string][]byte

// addKeys adds every key of data (when items is empty) or the listed items
// to p. A listed key that is missing is an error unless optional.
func (p payload) addKeys(kind, name string, data keyedData, items []corev1.KeyToPath, def *int32, optional bool) error {
	if len(items) == 0 {
		for key, value := range data {
			if err := p.add(key, value, fileMode(nil, def)); err != nil {
				return fmt.Errorf("%s %q: key %q: %w", kind, name, key, err)
			}
		}
		return nil
	}
	for _, item := range items {
		value, ok := data[item.Key]
		if !ok {
			if optional {
				continue
			}
			return fmt.Errorf("%s %q has no key %q", kind, name, item.Key)
		}
		if err := p.add(item.Path, value, fileMode(item.Mode, def)); err != nil {
			return fmt.Errorf("%s %q: key %q: %w", kind, name, item.Key, err)
		}
	}
	return nil
}

// addConfigMap adds a configMap's data to p. A missing optional configMap
// adds nothing.
func (m *Manager) addConfigMap(ctx context.Context, p payload, ns, name string, items []corev1.KeyToPath, def *int32, optional *bool) error {
	cm, err := m.client.CoreV1().ConfigMaps(ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		if apierrors.IsNotFound(err) {
			if optional != nil && *optional {
				return nil
			}
			return &notFoundError{kind: "configmap", name: name, err: err}
		}
		return fmt.Errorf("get configmap %q: %w", name, err)
	}
	data := make(keyedData, len(cm.Data)+len(cm.BinaryData))
	for k, v := range cm.Data {
		data[k] = []byte(v)
	}
	for k, v := range cm.BinaryData {
		data[k] = v
	}
	return p.addKeys("configmap", name, data, items, def, optional != nil && *optional)
}

// addSecret adds a secret's data to p. A missing optional secret adds
// nothing.
func (m *Manager) addSecret(ctx context.Context, p payload, ns, name string, items []corev1.KeyToPath, def *int32, optional *bool) error {
	s, err := m.client.CoreV1().Secrets(ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		if apierrors.IsNotFound(err) {
			if optional != nil && *optional {
				return nil
			}
			return &notFoundError{kind: "secret", name: name, err: err}
		}
		return fmt.Errorf("get secret %q: %w", name, err)
	}
	data := make(keyedData, len(s.Data)+len(s.StringData))
	for k, v := range s.Data {
		data[k] = v
	}
	// StringData is write-only on a real server; a fake client keeps it.
	for k, v := range s.StringData {
		if _, ok := data[k]; !ok {
			data[k] = []byte(v)
		}
	}
	return p.addKeys("secret", name, data, items, def, optional != nil && *optional)
}

// addDownwardAPI adds the pod's own fields to p.
func (m *Manager) addDownwardAPI(p payload, pod *corev1.Pod, items []corev1.DownwardAPIVolumeFile, def *int32) error {
	for _, item := range items {
		var value string
		var err error
		switch {
		case item.FieldRef != nil:
			value, err = podField(pod, item.FieldRef.FieldPath)
		case item.ResourceFieldRef != nil:
			value, err = m.containerResource(pod, item.ResourceFieldRef)
		default:
			err = fmt.Errorf("neither fieldRef nor resourceFieldRef is set")
		}
		if err != nil {
			return fmt.Errorf("downwardAPI path %q: %w", item.Path, err)
		}
		if err := p.add(item.Path, []byte(value), fileMode(item.Mode, def)); err != nil {
			return fmt.Errorf("downwardAPI: %w", err)
		}
	}
	return nil
}

// podField returns the value of a pod field allowed in downwardAPI volumes.
func podField(pod *corev1.Pod, path string) (string, error) {
	switch path {
	case "metadata.name":
		return pod.Name, nil
	case "metadata.namespace":
		return pod.Namespace, nil
	case "metadata.uid":
		return string(pod.UID), nil
	case "metadata.labels":
		return formatMap(pod.Labels), nil
	case "metadata.annotations":
		return formatMap(pod.Annotations), nil
	}
	if key, ok := subscript(path, "metadata.labels"); ok {
		return pod.Labels[key], nil
	}
	if key, ok := subscript(path, "metadata.annotations"); ok {
		return pod.Annotations[key], nil
	}
	return "", fmt.Errorf("field %q is not supported in a volume", path)
}

// subscript parses "<prefix>['key']".
func subscript(path, prefix string) (string, bool) {
	rest, ok := strings.CutPrefix(path, prefix+"['")
	if !ok {
		return "", false
	}
	return strings.CutSuffix(rest, "']")
}

// formatMap renders labels or annotations one `key="value"` per line,
// sorted by key, the format upstream's kubelet writes.
func formatMap(m map[string]string) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for i, k := range keys {
		if i > 0 {
			b.WriteByte('\n')
		}
		b.WriteString(k)
		b.WriteByte('=')
		b.WriteString(strconv.Quote(m[k]))
	}
	return b.String()
}

// containerResource returns a container's request or limit in units of
// the divisor, rounded up. An unset limit is the node's allocatable.
func (m *Manager) containerResource(pod *corev1.Pod, ref *corev1.ResourceFieldSelector) (string, error) {
	c := findContainer(pod, ref.ContainerName)
	if c == nil {
		return "", fmt.Errorf("container %q not found in the pod", ref.ContainerName)
	}
	kind, name, ok := strings.Cut(ref.Resource, ".")
	if !ok || (kind != "limits" && kind != "requests") {
		return "", fmt.Errorf("resource %q is not supported", ref.Resource)
	}
	res := corev1.ResourceName(name)
	var q resource.Quantity
	var set bool
	if kind == "limits" {
		q, set = c.Resources.Limits[res]
		if !set {
			q, set = m.allocatable()[res]
		}
	} else {
		q, set = c.Resources.Requests[res]
		if !set {
			// The API copies limits into unset requests; do the same for
			// objects that skipped defaulting.
			q, set = c.Resources.Limits[res]
		}
	}
	if !set {
		q = resource.Quantity{}
	}
	divisor := ref.Divisor
	if divisor.IsZero() {
		divisor = resource.MustParse("1")
	}
	var v float64
	if res == corev1.ResourceCPU {
		v = math.Ceil(float64(q.MilliValue()) / float64(divisor.MilliValue()))
	} else {
		v = math.Ceil(float64(q.Value()) / float64(divisor.Value()))
	}
	return strconv.FormatInt(int64(v), 10), nil
}

func findContainer(pod *corev1.Pod, name string) *corev1.Container {
	for i := range pod.Spec.Containers {
		if pod.Spec.Containers[i].Name == name {
			return &pod.Spec.Containers[i]
		}
	}
	for i := range pod.Spec.InitContainers {
		if pod.Spec.InitContainers[i].Name == name {
			return &pod.Spec.InitContainers[i]
		}
	}
	return nil
}

// projectedPayload builds a projected volume's content from its sources.
func (m *Manager) projectedPayload(ctx context.Context, pod *corev1.Pod, volName string, src *corev1.ProjectedVolumeSource) (payload, error) {
	p := payload{}
	def := src.DefaultMode
	for i, s := range src.Sources {
		var err error
		switch {
		case s.ServiceAccountToken != nil:
			var tok string
			tok, err = m.serviceAccountToken(ctx, pod, volName, s.ServiceAccountToken)
			if err == nil {
				err = p.add(s.ServiceAccountToken.Path, []byte(tok), fileMode(nil, def))
			}
		case s.ConfigMap != nil:
			err = m.addConfigMap(ctx, p, pod.Namespace, s.ConfigMap.Name, s.ConfigMap.Items, def, s.ConfigMap.Optional)
		case s.Secret != nil:
			err = m.addSecret(ctx, p, pod.Namespace, s.Secret.Name, s.Secret.Items, def, s.Secret.Optional)
		case s.DownwardAPI != nil:
			err = m.addDownwardAPI(p, pod, s.DownwardAPI.Items, def)
		default:
			err = fmt.Errorf("source %d: unsupported projection", i)
		}
		if err != nil {
			return nil, err
		}
	}
	return p, nil
}
