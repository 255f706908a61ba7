package node

import (
	"slices"

	corev1 "k8s.io/api/core/v1"
)

// Kinds of object a pod can reference, as they appear in reference keys.
const (
	KindSecret         = "secret"
	KindConfigMap      = "configmap"
	KindPVC            = "pvc"
	KindServiceAccount = "serviceaccount"
)

// Key names a namespaced object a pod references, as "<kind>/<namespace>/<name>",
// for example "secret/default/db-password". It is the value of the
// IndexReferences index.
func Key(kind, namespace, name string) string {
	return kind + "/" + namespace + "/" + name
}

// References returns the keys (see Key) of every object pod needs from the
// API to run: secrets, config maps, persistent volume claims and its service
// account. It looks at volumes (including projected sources, generic
// ephemeral volumes and the secret references of in-tree and CSI volumes),
// image pull secrets, and the env and envFrom of containers, init containers
// and ephemeral containers. The keys are sorted and unique; an empty
// service-account name yields no service-account key.
func References(pod *corev1.Pod) []string {
	ns := pod.Namespace
	var keys []string
	add := func(kind, name string) {
		if name != "" {
			keys = append(keys, Key(kind, ns, name))
		}
	}
	addRef := func(kind string, ref *corev1.LocalObjectReference) {
		if ref != nil {
			add(kind, ref.Name)
		}
	}

	spec := &pod.Spec
	add(KindServiceAccount, spec.ServiceAccountName)
	for _, s := range spec.ImagePullSecrets {
		add(KindSecret, s.Name)
	}
	for i := range spec.Volumes {
		v := &spec.Volumes[i]
		switch {
		case v.Secret != nil:
			add(KindSecret, v.Secret.SecretName)
		case v.ConfigMap != nil:
			add(KindConfigMap, v.ConfigMap.Name)
		case v.PersistentVolumeClaim != nil:
			add(KindPVC, v.PersistentVolumeClaim.ClaimName)
		case v.Ephemeral != nil:
			// A generic ephemeral volume is backed by a claim named after
			// the pod and the volume.
			add(KindPVC, pod.Name+"-"+v.Name)
		case v.Projected != nil:
			for _, src := range v.Projected.Sources {
				if src.Secret != nil {
					add(KindSecret, src.Secret.Name)
				}
				if src.ConfigMap != nil {
					add(KindConfigMap, src.ConfigMap.Name)
				}
			}
		case v.CSI != nil:
			addRef(KindSecret, v.CSI.NodePublishSecretRef)
		case v.AzureFile != nil:
			add(KindSecret, v.AzureFile.SecretName)
		case v.CephFS != nil:
			addRef(KindSecret, v.CephFS.SecretRef)
		case v.Cinder != nil:
			addRef(KindSecret, v.Cinder.SecretRef)
		case v.FlexVolume != nil:
			addRef(KindSecret, v.FlexVolume.SecretRef)
		case v.ISCSI != nil:
			addRef(KindSecret, v.ISCSI.SecretRef)
		case v.RBD != nil:
			addRef(KindSecret, v.RBD.SecretRef)
		case v.ScaleIO != nil:
			addRef(KindSecret, v.ScaleIO.SecretRef)
		case v.StorageOS != nil:
			addRef(KindSecret, v.StorageOS.SecretRef)
		}
	}

	envRefs := func(env []corev1.EnvVar, envFrom []corev1.EnvFromSource) {
		for _, e := range env {
			if e.ValueFrom == nil {
				continue
			}
			if r := e.ValueFrom.SecretKeyRef; r != nil {
				add(KindSecret, r.Name)
			}
			if r := e.ValueFrom.ConfigMapKeyRef; r != nil {
				add(KindConfigMap, r.Name)
			}
		}
		for _, e := range envFrom {
			if e.SecretRef != nil {
				add(KindSecret, e.SecretRef.Name)
			}
			if e.ConfigMapRef != nil {
				add(KindConfigMap, e.ConfigMapRef.Name)
			}
		}
	}
	for i := range spec.InitContainers {
		envRefs(spec.InitContainers[i].Env, spec.InitContainers[i].EnvFrom)
	}
	for i := range spec.Containers {
		envRefs(spec.Containers[i].Env, spec.Containers[i].EnvFrom)
	}
	for i := range spec.EphemeralContainers {
		envRefs(spec.EphemeralContainers[i].Env, spec.EphemeralContainers[i].EnvFrom)
	}

	slices.Sort(keys)
	return slices.Compact(keys)
}

// Index names registered on the shared pod informer by New.
const (
	// IndexNodeName indexes bound pods by spec.nodeName.
	IndexNodeName = "tether.node-authorizer/spec.nodeName"
	// IndexReferences indexes bound pods by the Key of every object they
	// reference (see References).
	IndexReferences = "tether.node-authorizer/references"
)

func indexByNodeName(obj any) ([]string, error) {
	pod, ok := obj.(*corev1.Pod)
	if !ok || pod.Spec.NodeName == "" {
		return nil, nil
	}
	return []string{pod.Spec.NodeName}, nil
}

// indexByReference indexes only bound pods: an unscheduled pod grants no
// node anything, and leaving it out keeps the index small.
func indexByReference(obj any) ([]string, error) {
	pod, ok := obj.(*corev1.Pod)
	if !ok || pod.Spec.NodeName == "" {
		return nil, nil
	}
	return References(pod), nil
}
