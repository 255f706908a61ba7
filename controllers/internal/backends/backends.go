// Package backends says which pods back a Service and how they are reached:
// whether a pod belongs in the Service's endpoints, at which address of
// which IP family, under which hostname and on which port. The endpoints
// and endpointslice controllers share it, so that an Endpoints object and
// the EndpointSlices of one Service always agree.
package backends

import (
	"maps"
	"net"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
)

// Selects reports whether the controllers manage svc's endpoints: it has
// a selector and is not of type ExternalName. A Service without a selector
// (like default/kubernetes) has endpoints its owner writes.
func Selects(svc *corev1.Service) bool {
	return len(svc.Spec.Selector) > 0 && svc.Spec.Type != corev1.ServiceTypeExternalName
}

// Headless reports whether svc has no cluster IP.
func Headless(svc *corev1.Service) bool {
	return svc.Spec.ClusterIP == corev1.ClusterIPNone
}

// ServicesFor returns the Services in pod's namespace whose selector
// matches pod's labels.
func ServicesFor(services corelisters.ServiceLister, pod *corev1.Pod) ([]*corev1.Service, error) {
	all, err := services.Services(pod.Namespace).List(labels.Everything())
	if err != nil {
		return nil, err
	}
	var out []*corev1.Service
	set := labels.Set(pod.Labels)
	for _, svc := range all {
		if Selects(svc) && labels.SelectorFromSet(svc.Spec.Selector).Matches(set) {
			out = append(out, svc)
		}
	}
	return out, nil
}

// Include reports whether pod belongs in the endpoints at all: it has an
// IP, has not finished (phase Succeeded or Failed), and is not being
// deleted unless includeTerminating.
func Include(pod *corev1.Pod, includeTerminating bool) bool {
	if pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed {
		return false
	}
	if pod.Status.PodIP == "" && len(pod.Status.PodIPs) == 0 {
		return false
	}
	return includeTerminating || pod.DeletionTimestamp == nil
}

// Ready reports whether pod's Ready condition is True.
func Ready(pod *corev1.Pod) bool {
	for _, c := range pod.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// Families returns the IP families svc's endpoints are published in: its
// ipFamilies, else the family of its cluster IP, else IPv4.
func Families(svc *corev1.Service) []corev1.IPFamily {
	if len(svc.Spec.IPFamilies) > 0 {
		return svc.Spec.IPFamilies
	}
	if ip := net.ParseIP(svc.Spec.ClusterIP); ip != nil && ip.To4() == nil {
		return []corev1.IPFamily{corev1.IPv6Protocol}
	}
	return []corev1.IPFamily{corev1.IPv4Protocol}
}

// IP returns pod's address of the given family, or "" if it has none.
func IP(pod *corev1.Pod, family corev1.IPFamily) string {
	ips := []string{pod.Status.PodIP}
	for _, ip := range pod.Status.PodIPs {
		ips = append(ips, ip.IP)
	}
	for _, s := range ips {
		ip := net.ParseIP(s)
		if ip == nil {
			continue
		}
		if (ip.To4() != nil) == (family == corev1.IPv4Protocol) {
			return s
		}
	}
	return ""
}

// Hostname returns the DNS hostname pod gets under svc: its
// spec.hostname, when its spec.subdomain names svc; else "".
func Hostname(pod *corev1.Pod, svc *corev1.Service) string {
	if pod.Spec.Hostname != "" && pod.Spec.Subdomain == svc.Name && pod.Namespace == svc.Namespace {
		return pod.Spec.Hostname
	}
	return ""
}

// Port resolves a service port's targetPort on pod: a number is used as
// it is (0 means the service port), a name is looked up among the named
// ports of the pod's containers, and of its restartable init containers
// (sidecars), with the service port's protocol. ok is false when the name
// is not found.
func Port(pod *corev1.Pod, sp *corev1.ServicePort) (port int32, ok bool) {
	tp := sp.TargetPort
	if tp.Type == intstr.Int {
		if tp.IntVal == 0 {
			return sp.Port, true
		}
		return tp.IntVal, true
	}
	proto := sp.Protocol
	if proto == "" {
		proto = corev1.ProtocolTCP
	}
	find := func(cs []corev1.Container, sidecarsOnly bool) (int32, bool) {
		for _, c := range cs {
			if sidecarsOnly && (c.RestartPolicy == nil || *c.RestartPolicy != corev1.ContainerRestartPolicyAlways) {
				continue
			}
			for _, p := range c.Ports {
				pp := p.Protocol
				if pp == "" {
					pp = corev1.ProtocolTCP
				}
				if p.Name == tp.StrVal && pp == proto {
					return p.ContainerPort, true
				}
			}
		}
		return 0, false
	}
	if port, ok := find(pod.Spec.Containers, false); ok {
		return port, true
	}
	return find(pod.Spec.InitContainers, true)
}

// TargetRef returns the reference to pod that an endpoint carries.
func TargetRef(pod *corev1.Pod) *corev1.ObjectReference {
	return &corev1.ObjectReference{Kind: "Pod", Namespace: pod.Namespace, Name: pod.Name, UID: pod.UID}
}

// NodeName returns a pointer to pod's node name, or nil if it has none.
func NodeName(pod *corev1.Pod) *string {
	if pod.Spec.NodeName == "" {
		return nil
	}
	n := pod.Spec.NodeName
	return &n
}

// PodHandler returns the pod event handlers both controllers use: every
// pod change queues (with enqueue, as "namespace/name") the Services that
// select the pod, before and after a label change, so that a pod leaves the
// Services it no longer matches. Resyncs (same resourceVersion) queue
// nothing: the Services resync themselves. onError reports a failed
// lookup.
func PodHandler(services corelisters.ServiceLister, enqueue func(key string), onError func(pod *corev1.Pod, err error)) cache.ResourceEventHandlerFuncs {
	queuePod := func(obj any) {
		if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
			obj = t.Obj
		}
		pod, ok := obj.(*corev1.Pod)
		if !ok {
			return
		}
		svcs, err := ServicesFor(services, pod)
		if err != nil {
			onError(pod, err)
			return
		}
		for _, svc := range svcs {
			enqueue(svc.Namespace + "/" + svc.Name)
		}
	}
	return cache.ResourceEventHandlerFuncs{
		AddFunc:    queuePod,
		DeleteFunc: queuePod,
		UpdateFunc: func(oldObj, newObj any) {
			old, ok1 := oldObj.(*corev1.Pod)
			cur, ok2 := newObj.(*corev1.Pod)
			if !ok1 || !ok2 || old.ResourceVersion == cur.ResourceVersion {
				return
			}
			queuePod(cur)
			if !maps.Equal(old.Labels, cur.Labels) {
				queuePod(old)
			}
		},
	}
}
