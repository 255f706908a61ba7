package podenv

import (
	"context"
	"fmt"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/util/validation"
)

// Sources reads the ConfigMaps and Secrets a container's environment refers
// to. The kubelet implements it with node-credentialed client-go Gets. A
// missing object must be reported with an error for which
// apierrors.IsNotFound is true, so optional references can be skipped.
type Sources interface {
	ConfigMap(ctx context.Context, namespace, name string) (*corev1.ConfigMap, error)
	Secret(ctx context.Context, namespace, name string) (*corev1.Secret, error)
}

// PodInfo carries what the downward API needs that is not in the Pod object
// the kubelet holds: the addresses it assigned and the node's capacity.
type PodInfo struct {
	// PodIP and PodIPs are the pod's addresses, primary first. If PodIPs is
	// empty, PodIP alone is used; if PodIP is empty, PodIPs[0] is. For a
	// hostNetwork pod they are the node's addresses.
	PodIP  string
	PodIPs []string
	// HostIP and HostIPs are the node's addresses, with the same rules.
	HostIP  string
	HostIPs []string
	// NodeAllocatable supplies the value of a cpu, memory or
	// ephemeral-storage limit the container does not set, for
	// resourceFieldRef. If nil, such a limit reads as 0.
	NodeAllocatable corev1.ResourceList
}

func (i PodInfo) podIPs() []string  { return ipList(i.PodIP, i.PodIPs) }
func (i PodInfo) hostIPs() []string { return ipList(i.HostIP, i.HostIPs) }

func ipList(primary string, all []string) []string {
	if len(all) > 0 {
		return all
	}
	if primary != "" {
		return []string{primary}
	}
	return nil
}

// Environment returns the environment of container c of pod as "NAME=value"
// strings, with the values upstream's kubelet gives:
//
//  1. the service link variables of [ServiceEnv];
//  2. the keys of each envFrom source, in order, with its prefix; keys that
//     are not valid environment variable names (per the API's
//     C_IDENTIFIER-like rule) are skipped and reported in warnings, one
//     warning per source, worded like upstream's
//     InvalidEnvironmentVariableNames event;
//  3. the env entries, in order. A literal value has its $(VAR) references
//     expanded against everything defined before it (1, 2 and earlier
//     entries); $$ escapes a $, and an unknown reference stays as written.
//
// A later definition of a name replaces the value of an earlier one (env
// over envFrom over service links, later over earlier), and every name
// appears once, at the position of its first definition. Keys of one
// ConfigMap or Secret are taken in sorted order, so the result is
// deterministic. (Upstream's kubelet yields the same set of variables in
// map order.)
//
// A reference marked optional to a missing object or key is skipped. A
// required one fails with an error; a missing key reads "couldn't find key K
// in ConfigMap ns/name" (or Secret). Errors from src are returned unwrapped,
// so a container's waiting message matches upstream's (configmap "x" not
// found).
func Environment(ctx context.Context, src Sources, pod *corev1.Pod, c *corev1.Container, services []*corev1.Service, info PodInfo) (env []string, warnings []string, err error) {
	r := resolver{ctx: ctx, src: src, ns: pod.Namespace}
	vars := newOrderedEnv()
	for _, v := range serviceVars(pod, services) {
		vars.set(v.name, v.value)
	}

	for _, from := range c.EnvFrom {
		var (
			data       map[string]string
			kind, name string
		)
		switch {
		case from.ConfigMapRef != nil:
			kind, name = "configMap", from.ConfigMapRef.Name
			cm, err := r.configMap(name)
			if err != nil {
				if apierrors.IsNotFound(err) && isTrue(from.ConfigMapRef.Optional) {
					continue
				}
				return nil, warnings, err
			}
			data = cm.Data
		case from.SecretRef != nil:
			kind, name = "secret", from.SecretRef.Name
			s, err := r.secret(name)
			if err != nil {
				if apierrors.IsNotFound(err) && isTrue(from.SecretRef.Optional) {
					continue
				}
				return nil, warnings, err
			}
			data = make(map[string]string, len(s.Data))
			for k, v := range s.Data {
				data[k] = string(v)
			}
		default:
			continue
		}
		var invalid []string
		for _, k := range sortedKeys(data) {
			n := from.Prefix + k
			if len(validation.IsEnvVarName(n)) != 0 {
				invalid = append(invalid, n)
				continue
			}
			vars.set(n, data[k])
		}
		if len(invalid) > 0 {
			warnings = append(warnings, fmt.Sprintf("Keys [%s] from the EnvFrom %s %s/%s were skipped since they are considered invalid environment variable names.",
				strings.Join(invalid, ", "), kind, pod.Namespace, name))
		}
	}

	for i := range c.Env {
		e := &c.Env[i]
		value := e.Value
		switch {
		case value != "":
			value = Expand(value, vars.values)
		case e.ValueFrom == nil:
			// An empty literal value.
		case e.ValueFrom.FieldRef != nil:
			value, err = fieldValue(e.ValueFrom.FieldRef, pod, info)
			if err != nil {
				return nil, warnings, fmt.Errorf("env %s: %w", e.Name, err)
			}
		case e.ValueFrom.ResourceFieldRef != nil:
			value, err = resourceValue(e.ValueFrom.ResourceFieldRef, pod, c, info.NodeAllocatable)
			if err != nil {
				return nil, warnings, fmt.Errorf("env %s: %w", e.Name, err)
			}
		case e.ValueFrom.ConfigMapKeyRef != nil:
			ref := e.ValueFrom.ConfigMapKeyRef
			optional := isTrue(ref.Optional)
			cm, err := r.configMap(ref.Name)
			if err != nil {
				if apierrors.IsNotFound(err) && optional {
					continue
				}
				return nil, warnings, err
			}
			v, ok := cm.Data[ref.Key]
			if !ok {
				if optional {
					continue
				}
				return nil, warnings, fmt.Errorf("couldn't find key %s in ConfigMap %s/%s", ref.Key, pod.Namespace, ref.Name)
			}
			value = v
		case e.ValueFrom.SecretKeyRef != nil:
			ref := e.ValueFrom.SecretKeyRef
			optional := isTrue(ref.Optional)
			s, err := r.secret(ref.Name)
			if err != nil {
				if apierrors.IsNotFound(err) && optional {
					continue
				}
				return nil, warnings, err
			}
			v, ok := s.Data[ref.Key]
			if !ok {
				if optional {
					continue
				}
				return nil, warnings, fmt.Errorf("couldn't find key %s in Secret %s/%s", ref.Key, pod.Namespace, ref.Name)
			}
			value = string(v)
		case e.ValueFrom.FileKeyRef != nil:
			return nil, warnings, fmt.Errorf("env %s: fileKeyRef is not supported", e.Name)
		}
		vars.set(e.Name, value)
	}
	return vars.list(), warnings, nil
}

// resolver fetches each ConfigMap and Secret at most once per call.
type resolver struct {
	ctx        context.Context
	src        Sources
	ns         string
	configMaps map[string]*corev1.ConfigMap
	secrets    map[string]*corev1.Secret
}

func (r *resolver) configMap(name string) (*corev1.ConfigMap, error) {
	if cm, ok := r.configMaps[name]; ok {
		return cm, nil
	}
	if r.src == nil {
		return nil, fmt.Errorf("couldn't get configMap %s/%s: no source of ConfigMaps", r.ns, name)
	}
	cm, err := r.src.ConfigMap(r.ctx, r.ns, name)
	if err != nil {
		return nil, err
	}
	if r.configMaps == nil {
		r.configMaps = make(map[string]*corev1.ConfigMap)
	}
	r.configMaps[name] = cm
	return cm, nil
}

func (r *resolver) secret(name string) (*corev1.Secret, error) {
	if s, ok := r.secrets[name]; ok {
		return s, nil
	}
	if r.src == nil {
		return nil, fmt.Errorf("couldn't get secret %s/%s: no source of Secrets", r.ns, name)
	}
	s, err := r.src.Secret(r.ctx, r.ns, name)
	if err != nil {
		return nil, err
	}
	if r.secrets == nil {
		r.secrets = make(map[string]*corev1.Secret)
	}
	r.secrets[name] = s
	return s, nil
}

// orderedEnv is a map of variables that remembers the order in which names
// were first set.
type orderedEnv struct {
	names  []string
	values map[string]string
}

func newOrderedEnv() *orderedEnv { return &orderedEnv{values: make(map[string]string)} }

func (o *orderedEnv) set(name, value string) {
	if _, ok := o.values[name]; !ok {
		o.names = append(o.names, name)
	}
	o.values[name] = value
}

func (o *orderedEnv) list() []string {
	out := make([]string, len(o.names))
	for i, n := range o.names {
		out[i] = n + "=" + o.values[n]
	}
	return out
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

func isTrue(b *bool) bool { return b != nil && *b }
