package podenv

import (
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
)

// masterNamespace and masterService name the Service that every pod gets
// link variables for, whatever its namespace and EnableServiceLinks say:
// the apiserver's own Service (path P3).
const (
	masterNamespace = "default"
	masterService   = "kubernetes"
)

// ServiceEnv returns the Docker-link style variables of the services a pod
// sees, as "NAME=value":
//
//   - every Service of the pod's namespace that has a cluster IP (not empty,
//     not "None"), when pod.Spec.EnableServiceLinks is nil or true;
//   - always the "kubernetes" Service of the "default" namespace, unless the
//     pod's own namespace has a Service of that name, which wins.
//
// services may hold Services of any namespace; the others are ignored. For a
// Service "my-svc" with cluster IP 10.96.0.7 and a first port 80/TCP named
// "http" the variables are MY_SVC_SERVICE_HOST=10.96.0.7,
// MY_SVC_SERVICE_PORT=80, MY_SVC_SERVICE_PORT_HTTP=80,
// MY_SVC_PORT=tcp://10.96.0.7:80 and MY_SVC_PORT_80_TCP{,_PROTO,_PORT,_ADDR}.
// Services are taken in name order, each Service's variables in upstream's
// order; the result is deterministic.
func ServiceEnv(pod *corev1.Pod, services []*corev1.Service) []string {
	vars := serviceVars(pod, services)
	out := make([]string, len(vars))
	for i, v := range vars {
		out[i] = v.name + "=" + v.value
	}
	return out
}

type envVar struct{ name, value string }

// serviceVars selects the services visible to pod and renders their variables.
func serviceVars(pod *corev1.Pod, services []*corev1.Service) []envVar {
	links := pod.Spec.EnableServiceLinks == nil || *pod.Spec.EnableServiceLinks
	picked := make(map[string]*corev1.Service)
	for _, svc := range services {
		if svc == nil || !hasClusterIP(svc) {
			continue
		}
		switch {
		case svc.Namespace == pod.Namespace && links:
			// The pod's own namespace wins over the master service.
			picked[svc.Name] = svc
		case svc.Namespace == masterNamespace && svc.Name == masterService:
			if _, ok := picked[svc.Name]; !ok {
				picked[svc.Name] = svc
			}
		}
	}
	names := make([]string, 0, len(picked))
	for name := range picked {
		names = append(names, name)
	}
	slices.Sort(names)
	var vars []envVar
	for _, name := range names {
		vars = append(vars, linkVars(picked[name])...)
	}
	return vars
}

func hasClusterIP(svc *corev1.Service) bool {
	ip := svc.Spec.ClusterIP
	return ip != "" && ip != corev1.ClusterIPNone
}

// envName turns a Service or port name into the variable name part.
func envName(s string) string {
	return strings.ToUpper(strings.ReplaceAll(s, "-", "_"))
}

func linkVars(svc *corev1.Service) []envVar {
	if len(svc.Spec.Ports) == 0 {
		return nil // not valid for a Service with a cluster IP
	}
	prefix := envName(svc.Name)
	ip := svc.Spec.ClusterIP
	first := strconv.Itoa(int(svc.Spec.Ports[0].Port))
	vars := []envVar{
		{prefix + "_SERVICE_HOST", ip},
		{prefix + "_SERVICE_PORT", first},
	}
	for _, p := range svc.Spec.Ports {
		if p.Name != "" {
			vars = append(vars, envVar{prefix + "_SERVICE_PORT_" + envName(p.Name), strconv.Itoa(int(p.Port))})
		}
	}
	for i, p := range svc.Spec.Ports {
		proto := strings.ToLower(string(p.Protocol))
		if proto == "" {
			proto = "tcp"
		}
		port := strconv.Itoa(int(p.Port))
		url := proto + "://" + net.JoinHostPort(ip, port)
		if i == 0 {
			vars = append(vars, envVar{prefix + "_PORT", url})
		}
		pp := fmt.Sprintf("%s_PORT_%d_%s", prefix, p.Port, strings.ToUpper(proto))
		vars = append(vars,
			envVar{pp, url},
			envVar{pp + "_PROTO", proto},
			envVar{pp + "_PORT", port},
			envVar{pp + "_ADDR", ip},
		)
	}
	return vars
}
