package registry

import (
	"context"
	"fmt"
	"math"
	"reflect"
	"slices"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/resource"
	apimachineryvalidation "k8s.io/apimachinery/pkg/api/validation"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	metav1validation "k8s.io/apimachinery/pkg/apis/meta/v1/validation"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"
)

// Pods serves core/v1 Pods. A pod's spec is fixed once created, except for
// the few fields podValidateSpecUpdate lists; its status is written by the
// kubelet through the status subresource.
var Pods = &Resource{
	GVK:                    corev1.SchemeGroupVersion.WithKind("Pod"),
	Resource:               "pods",
	ShortNames:             []string{"po"},
	Categories:             []string{"all"},
	Namespaced:             true,
	New:                    func() runtime.Object { return &corev1.Pod{} },
	NewList:                func() runtime.Object { return &corev1.PodList{} },
	Default:                podDefault,
	PrepareForCreate:       podPrepareForCreate,
	Validate:               podValidate,
	ValidateUpdate:         podValidateUpdate,
	HasStatus:              true,
	PrepareForStatusUpdate: podPrepareForStatusUpdate,
	ValidateStatusUpdate:   podValidateStatusUpdate,
	Fields:                 podFields,
	Columns:                podColumns,
	Row:                    podRow,
	GracePeriod:            podGracePeriod,
}

// podGracePeriod is how long a deleted pod's containers get to stop: what
// the request asks, else the pod's terminationGracePeriodSeconds (default
// 30). A pod no node runs, or one that has finished, goes at once: no
// kubelet would complete its deletion.
func podGracePeriod(obj runtime.Object, options *metav1.DeleteOptions) int64 {
	pod := obj.(*corev1.Pod)
	period := int64(corev1.DefaultTerminationGracePeriodSeconds)
	switch {
	case options.GracePeriodSeconds != nil:
		period = *options.GracePeriodSeconds
	case pod.Spec.TerminationGracePeriodSeconds != nil:
		period = *pod.Spec.TerminationGracePeriodSeconds
	}
	if pod.Spec.NodeName == "" || pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed {
		period = 0
	}
	return max(period, 0)
}

// Defaulting.

func podDefault(obj runtime.Object) {
	pod := obj.(*corev1.Pod)
	podDefaultSpec(&pod.Spec)
	// podIP and podIPs (hostIP and hostIPs) name the same addresses; older
	// writers set only the singular field.
	st := &pod.Status
	defaultIPs(&st.PodIP, &st.PodIPs, func(ip corev1.PodIP) string { return ip.IP }, func(s string) corev1.PodIP { return corev1.PodIP{IP: s} })
	defaultIPs(&st.HostIP, &st.HostIPs, func(ip corev1.HostIP) string { return ip.IP }, func(s string) corev1.HostIP { return corev1.HostIP{IP: s} })
}

func podDefaultSpec(spec *corev1.PodSpec) {
	if spec.RestartPolicy == "" {
		spec.RestartPolicy = corev1.RestartPolicyAlways
	}
	if spec.DNSPolicy == "" {
		spec.DNSPolicy = corev1.DNSClusterFirst
	}
	if spec.SchedulerName == "" {
		spec.SchedulerName = corev1.DefaultSchedulerName
	}
	if spec.SecurityContext == nil {
		spec.SecurityContext = &corev1.PodSecurityContext{}
	}
	defaultInt64(&spec.TerminationGracePeriodSeconds, corev1.DefaultTerminationGracePeriodSeconds)
	defaultBool(&spec.EnableServiceLinks, corev1.DefaultEnableServiceLinks)
	// serviceAccount is the deprecated twin of serviceAccountName.
	if spec.ServiceAccountName == "" {
		spec.ServiceAccountName = spec.DeprecatedServiceAccount
	}
	spec.DeprecatedServiceAccount = spec.ServiceAccountName

	for i := range spec.Volumes {
		podDefaultVolume(&spec.Volumes[i].VolumeSource)
	}
	for i := range spec.InitContainers {
		podDefaultContainer(&spec.InitContainers[i], spec.HostNetwork)
	}
	for i := range spec.Containers {
		podDefaultContainer(&spec.Containers[i], spec.HostNetwork)
	}
	for i := range spec.EphemeralContainers {
		// EphemeralContainerCommon has exactly the fields of Container.
		c := corev1.Container(spec.EphemeralContainers[i].EphemeralContainerCommon)
		podDefaultContainer(&c, false)
		spec.EphemeralContainers[i].EphemeralContainerCommon = corev1.EphemeralContainerCommon(c)
	}
}

func podDefaultContainer(c *corev1.Container, hostNetwork bool) {
	if c.ImagePullPolicy == "" {
		c.ImagePullPolicy = podPullPolicy(c.Image)
	}
	if c.TerminationMessagePath == "" {
		c.TerminationMessagePath = corev1.TerminationMessagePathDefault
	}
	if c.TerminationMessagePolicy == "" {
		c.TerminationMessagePolicy = corev1.TerminationMessageReadFile
	}
	for i := range c.Ports {
		p := &c.Ports[i]
		defaultProtocol(&p.Protocol)
		// On the host network the container listens on the host's port.
		if hostNetwork && p.HostPort == 0 {
			p.HostPort = p.ContainerPort
		}
	}
	for _, e := range c.Env {
		if e.ValueFrom != nil && e.ValueFrom.FieldRef != nil && e.ValueFrom.FieldRef.APIVersion == "" {
			e.ValueFrom.FieldRef.APIVersion = "v1"
		}
	}
	for _, p := range []*corev1.Probe{c.LivenessProbe, c.ReadinessProbe, c.StartupProbe} {
		if p == nil {
			continue
		}
		if p.TimeoutSeconds == 0 {
			p.TimeoutSeconds = 1
		}
		if p.PeriodSeconds == 0 {
			p.PeriodSeconds = 10
		}
		if p.SuccessThreshold == 0 {
			p.SuccessThreshold = 1
		}
		if p.FailureThreshold == 0 {
			p.FailureThreshold = 3
		}
		podDefaultHTTPGet(p.HTTPGet)
	}
	if lc := c.Lifecycle; lc != nil {
		for _, h := range []*corev1.LifecycleHandler{lc.PostStart, lc.PreStop} {
			if h != nil {
				podDefaultHTTPGet(h.HTTPGet)
			}
		}
	}
	// A container that states only limits requests exactly its limits.
	if len(c.Resources.Limits) > 0 {
		if c.Resources.Requests == nil {
			c.Resources.Requests = corev1.ResourceList{}
		}
		for name, q := range c.Resources.Limits {
			if _, ok := c.Resources.Requests[name]; !ok {
				c.Resources.Requests[name] = q.DeepCopy()
			}
		}
	}
}

func podDefaultHTTPGet(h *corev1.HTTPGetAction) {
	if h == nil {
		return
	}
	if h.Path == "" {
		h.Path = "/"
	}
	if h.Scheme == "" {
		h.Scheme = corev1.URISchemeHTTP
	}
}

// podPullPolicy returns the pull policy of an image that names none:
// Always for the "latest" tag, stated or implied by a missing tag, and
// IfNotPresent for any other tag or a digest.
func podPullPolicy(image string) corev1.PullPolicy {
	if image == "" {
		return corev1.PullIfNotPresent
	}
	name, _, hasDigest := strings.Cut(image, "@")
	tag := ""
	// A colon before the last slash separates a registry's port.
	if i := strings.LastIndexByte(name, ':'); i > strings.LastIndexByte(name, '/') {
		tag = name[i+1:]
	}
	if tag == "latest" || (tag == "" && !hasDigest) {
		return corev1.PullAlways
	}
	return corev1.PullIfNotPresent
}

func podDefaultVolume(vs *corev1.VolumeSource) {
	if len(podVolumeTypes(vs)) == 0 {
		vs.EmptyDir = &corev1.EmptyDirVolumeSource{}
	}
	if vs.HostPath != nil && vs.HostPath.Type == nil {
		t := corev1.HostPathUnset
		vs.HostPath.Type = &t
	}
	if vs.Secret != nil {
		defaultInt32(&vs.Secret.DefaultMode, corev1.SecretVolumeSourceDefaultMode)
	}
	if vs.ConfigMap != nil {
		defaultInt32(&vs.ConfigMap.DefaultMode, corev1.ConfigMapVolumeSourceDefaultMode)
	}
	if vs.DownwardAPI != nil {
		defaultInt32(&vs.DownwardAPI.DefaultMode, corev1.DownwardAPIVolumeSourceDefaultMode)
		podDefaultDownwardItems(vs.DownwardAPI.Items)
	}
	if vs.Projected != nil {
		defaultInt32(&vs.Projected.DefaultMode, corev1.ProjectedVolumeSourceDefaultMode)
		for _, src := range vs.Projected.Sources {
			if src.DownwardAPI != nil {
				podDefaultDownwardItems(src.DownwardAPI.Items)
			}
			if src.ServiceAccountToken != nil {
				defaultInt64(&src.ServiceAccountToken.ExpirationSeconds, 60*60)
			}
		}
	}
	if vs.ISCSI != nil && vs.ISCSI.ISCSIInterface == "" {
		vs.ISCSI.ISCSIInterface = "default"
	}
	if e := vs.Ephemeral; e != nil && e.VolumeClaimTemplate != nil && e.VolumeClaimTemplate.Spec.VolumeMode == nil {
		m := corev1.PersistentVolumeFilesystem
		e.VolumeClaimTemplate.Spec.VolumeMode = &m
	}
}

func podDefaultDownwardItems(items []corev1.DownwardAPIVolumeFile) {
	for _, it := range items {
		if it.FieldRef != nil && it.FieldRef.APIVersion == "" {
			it.FieldRef.APIVersion = "v1"
		}
	}
}

// podVolumeTypes returns the JSON names of the sources set in vs; a valid
// volume has exactly one.
func podVolumeTypes(vs *corev1.VolumeSource) []string {
	var set []string
	v := reflect.ValueOf(vs).Elem()
	for i := range v.NumField() {
		if f := v.Field(i); f.Kind() == reflect.Pointer && !f.IsNil() {
			name, _, _ := strings.Cut(v.Type().Field(i).Tag.Get("json"), ",")
			set = append(set, name)
		}
	}
	return set
}

// Create and status preparation.

func podPrepareForCreate(_ context.Context, obj runtime.Object) {
	pod := obj.(*corev1.Pod)
	pod.Status = corev1.PodStatus{Phase: corev1.PodPending, QOSClass: podQOSClass(&pod.Spec)}
	if len(pod.Spec.SchedulingGates) > 0 {
		pod.Status.Conditions = []corev1.PodCondition{{
			Type:    corev1.PodScheduled,
			Status:  corev1.ConditionFalse,
			Reason:  corev1.PodReasonSchedulingGated,
			Message: "Scheduling is blocked due to non-empty scheduling gates",
		}}
	}
}

func podPrepareForStatusUpdate(_ context.Context, obj, old runtime.Object) {
	pod, oldPod := obj.(*corev1.Pod), old.(*corev1.Pod)
	// The QoS class is fixed on create; a status writer need not repeat it.
	if pod.Status.QOSClass == "" {
		pod.Status.QOSClass = oldPod.Status.QOSClass
	}
}

// podQOSClass classifies a pod by the CPU and memory its containers ask
// for: BestEffort if none asks for any, Guaranteed if every container limits
// both and requests what it limits, Burstable otherwise.
func podQOSClass(spec *corev1.PodSpec) corev1.PodQOSClass {
	requests, limits := corev1.ResourceList{}, corev1.ResourceList{}
	add := func(sum corev1.ResourceList, name corev1.ResourceName, q resource.Quantity) {
		cur := sum[name]
		cur.Add(q)
		sum[name] = cur
	}
	guaranteed := true
	for _, list := range [][]corev1.Container{spec.InitContainers, spec.Containers} {
		for _, c := range list {
			for _, name := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
				if q, ok := c.Resources.Requests[name]; ok && !q.IsZero() {
					add(requests, name, q)
				}
				if q, ok := c.Resources.Limits[name]; ok && !q.IsZero() {
					add(limits, name, q)
				} else {
					guaranteed = false
				}
			}
		}
	}
	if len(requests) == 0 && len(limits) == 0 {
		return corev1.PodQOSBestEffort
	}
	for _, name := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
		r, l := requests[name], limits[name]
		if r.Cmp(l) != 0 {
			guaranteed = false
		}
	}
	if guaranteed {
		return corev1.PodQOSGuaranteed
	}
	return corev1.PodQOSBurstable
}

// Validation of the spec.

func podValidate(_ context.Context, obj runtime.Object) field.ErrorList {
	pod := obj.(*corev1.Pod)
	p := field.NewPath("spec")
	errs := podValidateSpec(&pod.Spec, nil, p)
	if len(pod.Spec.EphemeralContainers) > 0 {
		errs = append(errs, field.Forbidden(p.Child("ephemeralContainers"), "cannot be set on create"))
	}
	return errs
}

func podValidateUpdate(_ context.Context, obj, old runtime.Object) field.ErrorList {
	pod, oldPod := obj.(*corev1.Pod), old.(*corev1.Pod)
	p := field.NewPath("spec")
	errs := podValidateSpec(&pod.Spec, &oldPod.Spec, p)
	return append(errs, podValidateSpecUpdate(&pod.Spec, &oldPod.Spec, p)...)
}

// podValidateSpec checks a pod spec; old is the stored spec on update and
// nil on create.
func podValidateSpec(spec, old *corev1.PodSpec, p *field.Path) field.ErrorList {
	volumes, errs := podValidateVolumes(spec.Volumes, p.Child("volumes"))
	names := map[string]bool{}
	errs = append(errs, podValidateContainers(spec, spec.InitContainers, true, volumes, names, p.Child("initContainers"))...)
	if len(spec.Containers) == 0 {
		errs = append(errs, field.Required(p.Child("containers"), ""))
	}
	errs = append(errs, podValidateContainers(spec, spec.Containers, false, volumes, names, p.Child("containers"))...)
	errs = append(errs, podValidateHostPorts(spec.Containers, p.Child("containers"))...)

	errs = append(errs, validateOneOf(p.Child("restartPolicy"), string(spec.RestartPolicy),
		string(corev1.RestartPolicyAlways), string(corev1.RestartPolicyOnFailure), string(corev1.RestartPolicyNever))...)
	errs = append(errs, podValidateDNS(spec, p)...)
	// Negative grace periods were once accepted; stored ones stay valid.
	if g := spec.TerminationGracePeriodSeconds; g != nil && (old == nil || !reflect.DeepEqual(g, old.TerminationGracePeriodSeconds)) {
		errs = append(errs, apimachineryvalidation.ValidateNonnegativeField(*g, p.Child("terminationGracePeriodSeconds"))...)
	}
	if d := spec.ActiveDeadlineSeconds; d != nil && (*d < 1 || *d > math.MaxInt32) {
		errs = append(errs, field.Invalid(p.Child("activeDeadlineSeconds"), *d, validation.InclusiveRangeError(1, math.MaxInt32)))
	}
	if spec.NodeName != "" {
		errs = append(errs, validateNodeName(p.Child("nodeName"), spec.NodeName)...)
	}
	if spec.ServiceAccountName != "" {
		errs = append(errs, validateFormat(p.Child("serviceAccountName"), spec.ServiceAccountName, validation.IsDNS1123Subdomain)...)
	}
	if spec.Hostname != "" {
		errs = append(errs, validateFormat(p.Child("hostname"), spec.Hostname, validation.IsDNS1123Label)...)
	}
	if spec.Subdomain != "" {
		errs = append(errs, validateFormat(p.Child("subdomain"), spec.Subdomain, validation.IsDNS1123Label)...)
	}
	if spec.SchedulerName != "" {
		errs = append(errs, validateFormat(p.Child("schedulerName"), spec.SchedulerName, validation.IsDNS1123Subdomain)...)
	}
	if spec.PriorityClassName != "" {
		errs = append(errs, validateFormat(p.Child("priorityClassName"), spec.PriorityClassName, validation.IsDNS1123Subdomain)...)
	}
	if spec.RuntimeClassName != nil {
		errs = append(errs, validateRequiredFormat(p.Child("runtimeClassName"), *spec.RuntimeClassName, validation.IsDNS1123Subdomain)...)
	}
	errs = append(errs, metav1validation.ValidateLabels(spec.NodeSelector, p.Child("nodeSelector"))...)
	errs = append(errs, podValidateTolerations(spec.Tolerations, p.Child("tolerations"))...)
	for i, g := range spec.ReadinessGates {
		errs = append(errs, metav1validation.ValidateLabelName(string(g.ConditionType), p.Child("readinessGates").Index(i).Child("conditionType"))...)
	}
	for i, a := range spec.HostAliases {
		ap := p.Child("hostAliases").Index(i)
		errs = append(errs, validateIP(ap.Child("ip"), a.IP, nil)...)
		for j, h := range a.Hostnames {
			errs = append(errs, validateFormat(ap.Child("hostnames").Index(j), h, validation.IsDNS1123Subdomain)...)
		}
	}
	gates := map[string]bool{}
	for i, g := range spec.SchedulingGates {
		gp := p.Child("schedulingGates").Index(i).Child("name")
		if gates[g.Name] {
			errs = append(errs, field.Duplicate(gp, g.Name))
		} else {
			errs = append(errs, metav1validation.ValidateLabelName(g.Name, gp)...)
		}
		gates[g.Name] = true
	}
	errs = append(errs, validateResourceList(p.Child("overhead"), spec.Overhead)...)
	errs = append(errs, podValidateSpread(spec.TopologySpreadConstraints, p.Child("topologySpreadConstraints"))...)
	return errs
}

func podValidateVolumes(vols []corev1.Volume, p *field.Path) (map[string]bool, field.ErrorList) {
	names := map[string]bool{}
	var errs field.ErrorList
	for i := range vols {
		v := &vols[i]
		vp := p.Index(i)
		switch {
		case v.Name == "":
			errs = append(errs, field.Required(vp.Child("name"), ""))
		case names[v.Name]:
			errs = append(errs, field.Duplicate(vp.Child("name"), v.Name))
		default:
			errs = append(errs, validateFormat(vp.Child("name"), v.Name, validation.IsDNS1123Label)...)
		}
		if v.Name != "" {
			names[v.Name] = true
		}
		errs = append(errs, podValidateVolumeSource(&v.VolumeSource, vp)...)
	}
	return names, errs
}

var podHostPathTypes = []string{
	string(corev1.HostPathUnset), string(corev1.HostPathDirectoryOrCreate), string(corev1.HostPathDirectory),
	string(corev1.HostPathFileOrCreate), string(corev1.HostPathFile), string(corev1.HostPathSocket),
	string(corev1.HostPathCharDev), string(corev1.HostPathBlockDev),
}

func podValidateVolumeSource(vs *corev1.VolumeSource, p *field.Path) field.ErrorList {
	types := podVolumeTypes(vs)
	switch {
	case len(types) == 0:
		return field.ErrorList{field.Required(p, "must specify a volume type")}
	case len(types) > 1:
		return field.ErrorList{field.Forbidden(p.Child(types[1]), "may not specify more than 1 volume type")}
	}
	var errs field.ErrorList
	switch {
	case vs.HostPath != nil:
		hp := p.Child("hostPath")
		if vs.HostPath.Path == "" {
			errs = append(errs, field.Required(hp.Child("path"), ""))
		} else if slices.Contains(strings.Split(vs.HostPath.Path, "/"), "..") {
			errs = append(errs, field.Invalid(hp.Child("path"), vs.HostPath.Path, "must not contain '..'"))
		}
		if t := vs.HostPath.Type; t != nil && !slices.Contains(podHostPathTypes, string(*t)) {
			errs = append(errs, field.NotSupported(hp.Child("type"), *t, podHostPathTypes))
		}
	case vs.EmptyDir != nil:
		if vs.EmptyDir.SizeLimit != nil {
			errs = append(errs, validateQuantity(p.Child("emptyDir", "sizeLimit"), *vs.EmptyDir.SizeLimit)...)
		}
	case vs.Secret != nil:
		sp := p.Child("secret")
		if vs.Secret.SecretName == "" {
			errs = append(errs, field.Required(sp.Child("secretName"), ""))
		}
		errs = append(errs, validateFileMode(sp.Child("defaultMode"), vs.Secret.DefaultMode)...)
		errs = append(errs, podValidateKeyPaths(vs.Secret.Items, sp.Child("items"))...)
	case vs.ConfigMap != nil:
		cp := p.Child("configMap")
		if vs.ConfigMap.Name == "" {
			errs = append(errs, field.Required(cp.Child("name"), ""))
		}
		errs = append(errs, validateFileMode(cp.Child("defaultMode"), vs.ConfigMap.DefaultMode)...)
		errs = append(errs, podValidateKeyPaths(vs.ConfigMap.Items, cp.Child("items"))...)
	case vs.PersistentVolumeClaim != nil:
		if vs.PersistentVolumeClaim.ClaimName == "" {
			errs = append(errs, field.Required(p.Child("persistentVolumeClaim", "claimName"), ""))
		}
	case vs.DownwardAPI != nil:
		dp := p.Child("downwardAPI")
		errs = append(errs, validateFileMode(dp.Child("defaultMode"), vs.DownwardAPI.DefaultMode)...)
		errs = append(errs, podValidateDownwardItems(vs.DownwardAPI.Items, dp.Child("items"))...)
	case vs.Projected != nil:
		errs = append(errs, podValidateProjected(vs.Projected, p.Child("projected"))...)
	}
	return errs
}

func podValidateProjected(pv *corev1.ProjectedVolumeSource, p *field.Path) field.ErrorList {
	errs := validateFileMode(p.Child("defaultMode"), pv.DefaultMode)
	for i := range pv.Sources {
		src := &pv.Sources[i]
		sp := p.Child("sources").Index(i)
		n := 0
		if src.Secret != nil {
			n++
			if src.Secret.Name == "" {
				errs = append(errs, field.Required(sp.Child("secret", "name"), ""))
			}
			errs = append(errs, podValidateKeyPaths(src.Secret.Items, sp.Child("secret", "items"))...)
		}
		if src.ConfigMap != nil {
			n++
			if src.ConfigMap.Name == "" {
				errs = append(errs, field.Required(sp.Child("configMap", "name"), ""))
			}
			errs = append(errs, podValidateKeyPaths(src.ConfigMap.Items, sp.Child("configMap", "items"))...)
		}
		if src.DownwardAPI != nil {
			n++
			errs = append(errs, podValidateDownwardItems(src.DownwardAPI.Items, sp.Child("downwardAPI", "items"))...)
		}
		if t := src.ServiceAccountToken; t != nil {
			n++
			tp := sp.Child("serviceAccountToken")
			if t.Path == "" {
				errs = append(errs, field.Required(tp.Child("path"), ""))
			} else {
				errs = append(errs, validateRelativePath(tp.Child("path"), t.Path)...)
			}
			if e := t.ExpirationSeconds; e != nil {
				switch {
				case *e < 10*60:
					errs = append(errs, field.Invalid(tp.Child("expirationSeconds"), *e, "may not specify a duration less than 10 minutes"))
				case *e > 1<<32:
					errs = append(errs, field.Invalid(tp.Child("expirationSeconds"), *e, "may not specify a duration larger than 2^32 seconds"))
				}
			}
		}
		if src.ClusterTrustBundle != nil {
			n++
		}
		if src.PodCertificate != nil {
			n++
		}
		switch {
		case n == 0:
			errs = append(errs, field.Required(sp, "must specify exactly one source"))
		case n > 1:
			errs = append(errs, field.Forbidden(sp, "may not specify more than 1 volume type per source"))
		}
	}
	return errs
}

func podValidateKeyPaths(items []corev1.KeyToPath, p *field.Path) field.ErrorList {
	var errs field.ErrorList
	for i, it := range items {
		ip := p.Index(i)
		if it.Key == "" {
			errs = append(errs, field.Required(ip.Child("key"), ""))
		}
		errs = append(errs, podValidateItemPath(ip.Child("path"), it.Path)...)
		errs = append(errs, validateFileMode(ip.Child("mode"), it.Mode)...)
	}
	return errs
}

// podValidateItemPath checks the path of a file projected into a volume.
func podValidateItemPath(p *field.Path, target string) field.ErrorList {
	if target == "" {
		return field.ErrorList{field.Required(p, "")}
	}
	errs := validateRelativePath(p, target)
	if strings.HasPrefix(target, "..") {
		errs = append(errs, field.Invalid(p, target, "must not start with '..'"))
	}
	return errs
}

// podVolumeFieldPaths are the pod fields a downward API volume can expose.
var podVolumeFieldPaths = []string{"metadata.name", "metadata.namespace", "metadata.uid", "metadata.labels", "metadata.annotations"}

// podEnvFieldPaths are the pod fields an environment variable can expose.
var podEnvFieldPaths = []string{
	"metadata.name", "metadata.namespace", "metadata.uid", "metadata.labels", "metadata.annotations",
	"spec.nodeName", "spec.serviceAccountName", "status.hostIP", "status.hostIPs", "status.podIP", "status.podIPs",
}

func podValidateDownwardItems(items []corev1.DownwardAPIVolumeFile, p *field.Path) field.ErrorList {
	var errs field.ErrorList
	for i, it := range items {
		ip := p.Index(i)
		errs = append(errs, podValidateItemPath(ip.Child("path"), it.Path)...)
		errs = append(errs, validateFileMode(ip.Child("mode"), it.Mode)...)
		switch {
		case it.FieldRef != nil && it.ResourceFieldRef != nil:
			errs = append(errs, field.Invalid(ip, "resource", "fieldRef and resourceFieldRef can not be specified simultaneously"))
		case it.FieldRef != nil:
			errs = append(errs, podValidateFieldRef(it.FieldRef, podVolumeFieldPaths, ip.Child("fieldRef"))...)
		case it.ResourceFieldRef != nil:
			errs = append(errs, podValidateResourceFieldRef(it.ResourceFieldRef, ip.Child("resourceFieldRef"))...)
		default:
			errs = append(errs, field.Required(ip, "one of fieldRef and resourceFieldRef is required"))
		}
	}
	return errs
}

// podValidateFieldRef checks a reference to a field of the pod itself. A
// single label or annotation is named as metadata.labels['key'].
func podValidateFieldRef(ref *corev1.ObjectFieldSelector, allowed []string, p *field.Path) field.ErrorList {
	var errs field.ErrorList
	if ref.APIVersion != "v1" {
		errs = append(errs, field.NotSupported(p.Child("apiVersion"), ref.APIVersion, []string{"v1"}))
	}
	fp := p.Child("fieldPath")
	if ref.FieldPath == "" {
		return append(errs, field.Required(fp, ""))
	}
	for _, prefix := range []string{"metadata.labels", "metadata.annotations"} {
		if key, ok := strings.CutPrefix(ref.FieldPath, prefix+"['"); ok {
			if key, ok = strings.CutSuffix(key, "']"); !ok {
				return append(errs, field.Invalid(fp, ref.FieldPath, "must end with ']'"))
			}
			return append(errs, metav1validation.ValidateLabelName(key, fp)...)
		}
	}
	if !slices.Contains(allowed, ref.FieldPath) {
		errs = append(errs, field.NotSupported(fp, ref.FieldPath, allowed))
	}
	return errs
}

var podResourceFieldRefs = []string{
	"limits.cpu", "limits.memory", "limits.ephemeral-storage",
	"requests.cpu", "requests.memory", "requests.ephemeral-storage",
}

func podValidateResourceFieldRef(ref *corev1.ResourceFieldSelector, p *field.Path) field.ErrorList {
	rp := p.Child("resource")
	switch {
	case ref.Resource == "":
		return field.ErrorList{field.Required(rp, "")}
	case slices.Contains(podResourceFieldRefs, ref.Resource),
		strings.HasPrefix(ref.Resource, "limits."+corev1.ResourceHugePagesPrefix),
		strings.HasPrefix(ref.Resource, "requests."+corev1.ResourceHugePagesPrefix):
		return nil
	}
	return field.ErrorList{field.NotSupported(rp, ref.Resource, podResourceFieldRefs)}
}

// podValidateContainers checks init or regular containers; names collects
// the container names seen so far, which are unique across both lists.
func podValidateContainers(spec *corev1.PodSpec, containers []corev1.Container, init bool, volumes, names map[string]bool, p *field.Path) field.ErrorList {
	var errs field.ErrorList
	for i := range containers {
		c := &containers[i]
		cp := p.Index(i)
		switch {
		case c.Name == "":
			errs = append(errs, field.Required(cp.Child("name"), ""))
		case names[c.Name]:
			errs = append(errs, field.Duplicate(cp.Child("name"), c.Name))
		default:
			errs = append(errs, validateFormat(cp.Child("name"), c.Name, validation.IsDNS1123Label)...)
		}
		if c.Name != "" {
			names[c.Name] = true
		}
		switch {
		case c.Image == "":
			errs = append(errs, field.Required(cp.Child("image"), ""))
		case strings.TrimSpace(c.Image) != c.Image:
			errs = append(errs, field.Invalid(cp.Child("image"), c.Image, "must not have leading or trailing whitespace"))
		}

		// An init container with restartPolicy Always is a sidecar: it
		// keeps running beside the regular containers and may be probed.
		sidecar := false
		if rp := c.RestartPolicy; rp != nil {
			switch {
			case !init:
				errs = append(errs, field.Forbidden(cp.Child("restartPolicy"), "may not be set for non-init containers"))
			case *rp == corev1.ContainerRestartPolicyAlways:
				sidecar = true
			default:
				errs = append(errs, field.NotSupported(cp.Child("restartPolicy"), *rp, []string{string(corev1.ContainerRestartPolicyAlways)}))
			}
		}
		if init && !sidecar {
			for _, f := range []struct {
				name string
				set  bool
			}{
				{"lifecycle", c.Lifecycle != nil},
				{"livenessProbe", c.LivenessProbe != nil},
				{"readinessProbe", c.ReadinessProbe != nil},
				{"startupProbe", c.StartupProbe != nil},
			} {
				if f.set {
					errs = append(errs, field.Forbidden(cp.Child(f.name), "may not be set for init containers without restartPolicy=Always"))
				}
			}
		} else {
			errs = append(errs, podValidateProbe(c.LivenessProbe, true, cp.Child("livenessProbe"))...)
			errs = append(errs, podValidateProbe(c.ReadinessProbe, false, cp.Child("readinessProbe"))...)
			errs = append(errs, podValidateProbe(c.StartupProbe, true, cp.Child("startupProbe"))...)
			errs = append(errs, podValidateLifecycle(c.Lifecycle, cp.Child("lifecycle"))...)
		}

		errs = append(errs, podValidatePorts(c.Ports, spec.HostNetwork, cp.Child("ports"))...)
		errs = append(errs, podValidateEnv(c.Env, cp.Child("env"))...)
		errs = append(errs, podValidateEnvFrom(c.EnvFrom, cp.Child("envFrom"))...)
		errs = append(errs, podValidateMounts(c, volumes, cp)...)
		errs = append(errs, podValidateResources(c.Resources, cp.Child("resources"))...)
		errs = append(errs, validateOneOf(cp.Child("imagePullPolicy"), string(c.ImagePullPolicy),
			string(corev1.PullAlways), string(corev1.PullIfNotPresent), string(corev1.PullNever))...)
		errs = append(errs, validateOneOf(cp.Child("terminationMessagePolicy"), string(c.TerminationMessagePolicy),
			string(corev1.TerminationMessageReadFile), string(corev1.TerminationMessageFallbackToLogsOnError))...)
	}
	return errs
}

func podValidatePorts(ports []corev1.ContainerPort, hostNetwork bool, p *field.Path) field.ErrorList {
	var errs field.ErrorList
	names := map[string]bool{}
	for i, port := range ports {
		pp := p.Index(i)
		if port.Name != "" {
			if names[port.Name] {
				errs = append(errs, field.Duplicate(pp.Child("name"), port.Name))
			} else {
				errs = append(errs, validateFormat(pp.Child("name"), port.Name, validation.IsValidPortName)...)
			}
			names[port.Name] = true
		}
		if port.ContainerPort == 0 {
			errs = append(errs, field.Required(pp.Child("containerPort"), ""))
		} else {
			errs = append(errs, validatePortNumber(pp.Child("containerPort"), port.ContainerPort)...)
		}
		if port.HostPort != 0 {
			errs = append(errs, validatePortNumber(pp.Child("hostPort"), port.HostPort)...)
			if hostNetwork && port.HostPort != port.ContainerPort {
				errs = append(errs, field.Invalid(pp.Child("hostPort"), port.HostPort, "must match `containerPort` when `hostNetwork` is true"))
			}
		}
		if port.HostIP != "" {
			errs = append(errs, validateIP(pp.Child("hostIP"), port.HostIP, nil)...)
		}
		errs = append(errs, validateProtocol(pp.Child("protocol"), port.Protocol)...)
	}
	return errs
}

// podValidateHostPorts reports two containers of a pod taking the same
// port of the host.
func podValidateHostPorts(containers []corev1.Container, p *field.Path) field.ErrorList {
	var errs field.ErrorList
	seen := map[string]bool{}
	for i, c := range containers {
		for j, port := range c.Ports {
			if port.HostPort == 0 {
				continue
			}
			key := fmt.Sprintf("%s/%s/%d", port.Protocol, port.HostIP, port.HostPort)
			if seen[key] {
				errs = append(errs, field.Duplicate(p.Index(i).Child("ports").Index(j).Child("hostPort"), key))
			}
			seen[key] = true
		}
	}
	return errs
}

func podValidateEnv(env []corev1.EnvVar, p *field.Path) field.ErrorList {
	var errs field.ErrorList
	for i, e := range env {
		ep := p.Index(i)
		errs = append(errs, validateRequiredFormat(ep.Child("name"), e.Name, validation.IsRelaxedEnvVarName)...)
		if e.ValueFrom == nil {
			continue
		}
		vp := ep.Child("valueFrom")
		src := e.ValueFrom
		n := 0
		if src.FieldRef != nil {
			n++
			errs = append(errs, podValidateFieldRef(src.FieldRef, podEnvFieldPaths, vp.Child("fieldRef"))...)
		}
		if src.ResourceFieldRef != nil {
			n++
			errs = append(errs, podValidateResourceFieldRef(src.ResourceFieldRef, vp.Child("resourceFieldRef"))...)
		}
		if ref := src.ConfigMapKeyRef; ref != nil {
			n++
			errs = append(errs, podValidateKeyRef(ref.Name, ref.Key, vp.Child("configMapKeyRef"))...)
		}
		if ref := src.SecretKeyRef; ref != nil {
			n++
			errs = append(errs, podValidateKeyRef(ref.Name, ref.Key, vp.Child("secretKeyRef"))...)
		}
		if src.FileKeyRef != nil {
			n++
		}
		switch {
		case n == 0:
			errs = append(errs, field.Invalid(vp, "", "must specify one of: `fieldRef`, `resourceFieldRef`, `configMapKeyRef` or `secretKeyRef`"))
		case n > 1:
			errs = append(errs, field.Invalid(vp, "", "may not have more than one field specified at a time"))
		}
		if e.Value != "" {
			errs = append(errs, field.Invalid(vp, "", "may not be specified when `value` is not empty"))
		}
	}
	return errs
}

// podValidateKeyRef checks a reference to one key of a ConfigMap or Secret.
func podValidateKeyRef(name, key string, p *field.Path) field.ErrorList {
	errs := validateRequiredFormat(p.Child("name"), name, validation.IsDNS1123Subdomain)
	return append(errs, validateRequiredFormat(p.Child("key"), key, validation.IsConfigMapKey)...)
}

func podValidateEnvFrom(from []corev1.EnvFromSource, p *field.Path) field.ErrorList {
	var errs field.ErrorList
	for i, f := range from {
		fp := p.Index(i)
		if f.Prefix != "" {
			errs = append(errs, validateFormat(fp.Child("prefix"), f.Prefix, validation.IsRelaxedEnvVarName)...)
		}
		n := 0
		if f.ConfigMapRef != nil {
			n++
			errs = append(errs, validateRequiredFormat(fp.Child("configMapRef", "name"), f.ConfigMapRef.Name, validation.IsDNS1123Subdomain)...)
		}
		if f.SecretRef != nil {
			n++
			errs = append(errs, validateRequiredFormat(fp.Child("secretRef", "name"), f.SecretRef.Name, validation.IsDNS1123Subdomain)...)
		}
		switch {
		case n == 0:
			errs = append(errs, field.Invalid(fp, "", "must specify one of: `configMapRef` or `secretRef`"))
		case n > 1:
			errs = append(errs, field.Invalid(fp, "", "may not have more than one field specified at a time"))
		}
	}
	return errs
}

func podValidateMounts(c *corev1.Container, volumes map[string]bool, p *field.Path) field.ErrorList {
	var errs field.ErrorList
	paths := map[string]bool{}
	for i, m := range c.VolumeMounts {
		mp := p.Child("volumeMounts").Index(i)
		switch {
		case m.Name == "":
			errs = append(errs, field.Required(mp.Child("name"), ""))
		case !volumes[m.Name]:
			errs = append(errs, field.NotFound(mp.Child("name"), m.Name))
		}
		switch {
		case m.MountPath == "":
			errs = append(errs, field.Required(mp.Child("mountPath"), ""))
		case paths[m.MountPath]:
			errs = append(errs, field.Invalid(mp.Child("mountPath"), m.MountPath, "must be unique"))
		}
		paths[m.MountPath] = true
		if m.SubPath != "" {
			errs = append(errs, validateRelativePath(mp.Child("subPath"), m.SubPath)...)
			if m.SubPathExpr != "" {
				errs = append(errs, field.Invalid(mp.Child("subPathExpr"), m.SubPathExpr, "subPathExpr and subPath are mutually exclusive"))
			}
		}
		if m.SubPathExpr != "" {
			errs = append(errs, validateRelativePath(mp.Child("subPathExpr"), m.SubPathExpr)...)
		}
		if mode := m.MountPropagation; mode != nil {
			errs = append(errs, validateOneOf(mp.Child("mountPropagation"), string(*mode),
				string(corev1.MountPropagationNone), string(corev1.MountPropagationHostToContainer), string(corev1.MountPropagationBidirectional))...)
		}
	}
	for i, d := range c.VolumeDevices {
		dp := p.Child("volumeDevices").Index(i)
		switch {
		case d.Name == "":
			errs = append(errs, field.Required(dp.Child("name"), ""))
		case !volumes[d.Name]:
			errs = append(errs, field.NotFound(dp.Child("name"), d.Name))
		}
		if d.DevicePath == "" {
			errs = append(errs, field.Required(dp.Child("devicePath"), ""))
		}
	}
	return errs
}

// podValidateResources checks the requests and limits of a container:
// known resource names, no negative quantities, requests within limits, and
// requests equal to limits for resources that cannot be overcommitted
// (hugepages and extended resources).
func podValidateResources(r corev1.ResourceRequirements, p *field.Path) field.ErrorList {
	var errs field.ErrorList
	lp, rp := p.Child("limits"), p.Child("requests")
	for _, name := range coreResourceNames(r.Limits) {
		kp := lp.Key(string(name))
		errs = append(errs, podValidateResourceName(kp, name)...)
		errs = append(errs, validateQuantity(kp, r.Limits[name])...)
	}
	for _, name := range coreResourceNames(r.Requests) {
		kp := rp.Key(string(name))
		q := r.Requests[name]
		errs = append(errs, podValidateResourceName(kp, name)...)
		errs = append(errs, validateQuantity(kp, q)...)
		limit, limited := r.Limits[name]
		overcommit := name == corev1.ResourceCPU || name == corev1.ResourceMemory || name == corev1.ResourceEphemeralStorage
		switch {
		case limited && q.Cmp(limit) > 0:
			errs = append(errs, field.Invalid(kp, q.String(), fmt.Sprintf("must be less than or equal to %s limit of %s", name, limit.String())))
		case !overcommit && limited && q.Cmp(limit) != 0:
			errs = append(errs, field.Invalid(kp, q.String(), fmt.Sprintf("must be equal to %s limit of %s", name, limit.String())))
		case !overcommit && !limited:
			errs = append(errs, field.Forbidden(lp, "Limit must be set for non overcommitable resources"))
		}
	}
	return errs
}

// podValidateResourceName checks that a container asks for a resource
// that containers can have: cpu, memory, ephemeral-storage, hugepages or a
// domain-qualified extended resource.
func podValidateResourceName(p *field.Path, name corev1.ResourceName) field.ErrorList {
	if errs := metav1validation.ValidateLabelName(string(name), p); len(errs) > 0 {
		return errs
	}
	s := string(name)
	switch {
	case name == corev1.ResourceCPU, name == corev1.ResourceMemory, name == corev1.ResourceEphemeralStorage,
		strings.HasPrefix(s, corev1.ResourceHugePagesPrefix):
		return nil
	case strings.Contains(s, "/") && !strings.HasPrefix(s, "kubernetes.io/") && !strings.HasPrefix(s, "requests."):
		return nil
	}
	return field.ErrorList{field.Invalid(p, s, "must be a standard resource for containers")}
}

func podValidateProbe(pr *corev1.Probe, singleSuccess bool, p *field.Path) field.ErrorList {
	if pr == nil {
		return nil
	}
	errs := podValidateHandler(p, pr.Exec, pr.HTTPGet, pr.TCPSocket, pr.GRPC, nil)
	for _, f := range []struct {
		name  string
		value int32
	}{
		{"initialDelaySeconds", pr.InitialDelaySeconds},
		{"timeoutSeconds", pr.TimeoutSeconds},
		{"periodSeconds", pr.PeriodSeconds},
		{"successThreshold", pr.SuccessThreshold},
		{"failureThreshold", pr.FailureThreshold},
	} {
		errs = append(errs, apimachineryvalidation.ValidateNonnegativeField(int64(f.value), p.Child(f.name))...)
	}
	if singleSuccess && pr.SuccessThreshold != 1 {
		errs = append(errs, field.Invalid(p.Child("successThreshold"), pr.SuccessThreshold, "must be 1"))
	}
	if g := pr.TerminationGracePeriodSeconds; g != nil && *g <= 0 {
		errs = append(errs, field.Invalid(p.Child("terminationGracePeriodSeconds"), *g, "must be greater than 0"))
	}
	return errs
}

func podValidateLifecycle(lc *corev1.Lifecycle, p *field.Path) field.ErrorList {
	if lc == nil {
		return nil
	}
	var errs field.ErrorList
	if h := lc.PostStart; h != nil {
		errs = append(errs, podValidateHandler(p.Child("postStart"), h.Exec, h.HTTPGet, h.TCPSocket, nil, h.Sleep)...)
	}
	if h := lc.PreStop; h != nil {
		errs = append(errs, podValidateHandler(p.Child("preStop"), h.Exec, h.HTTPGet, h.TCPSocket, nil, h.Sleep)...)
	}
	return errs
}

// podValidateHandler checks the action of a probe or lifecycle hook, which
// must be exactly one of those given non-nil.
func podValidateHandler(p *field.Path, exec *corev1.ExecAction, http *corev1.HTTPGetAction, tcp *corev1.TCPSocketAction, grpc *corev1.GRPCAction, sleep *corev1.SleepAction) field.ErrorList {
	var errs field.ErrorList
	n := 0
	one := func(set bool, name string, check func(*field.Path) field.ErrorList) {
		if !set {
			return
		}
		if n++; n > 1 {
			errs = append(errs, field.Forbidden(p.Child(name), "may not specify more than 1 handler type"))
			return
		}
		errs = append(errs, check(p.Child(name))...)
	}
	one(exec != nil, "exec", func(p *field.Path) field.ErrorList {
		if len(exec.Command) == 0 {
			return field.ErrorList{field.Required(p.Child("command"), "")}
		}
		return nil
	})
	one(http != nil, "httpGet", func(p *field.Path) field.ErrorList {
		var errs field.ErrorList
		if http.Path == "" {
			errs = append(errs, field.Required(p.Child("path"), ""))
		}
		errs = append(errs, validatePortNumOrName(p.Child("port"), http.Port)...)
		errs = append(errs, validateOneOf(p.Child("scheme"), string(http.Scheme), string(corev1.URISchemeHTTP), string(corev1.URISchemeHTTPS))...)
		for i, h := range http.HTTPHeaders {
			errs = append(errs, validateFormat(p.Child("httpHeaders").Index(i).Child("name"), h.Name, validation.IsHTTPHeaderName)...)
		}
		return errs
	})
	one(tcp != nil, "tcpSocket", func(p *field.Path) field.ErrorList {
		return validatePortNumOrName(p.Child("port"), tcp.Port)
	})
	one(grpc != nil, "grpc", func(p *field.Path) field.ErrorList {
		return validatePortNumber(p.Child("port"), grpc.Port)
	})
	one(sleep != nil, "sleep", func(p *field.Path) field.ErrorList {
		return apimachineryvalidation.ValidateNonnegativeField(sleep.Seconds, p.Child("seconds"))
	})
	if n == 0 {
		errs = append(errs, field.Required(p, "must specify a handler type"))
	}
	return errs
}

var podTaintEffects = []string{string(corev1.TaintEffectNoSchedule), string(corev1.TaintEffectPreferNoSchedule), string(corev1.TaintEffectNoExecute)}

func podValidateTolerations(tols []corev1.Toleration, p *field.Path) field.ErrorList {
	var errs field.ErrorList
	for i, t := range tols {
		tp := p.Index(i)
		if t.Key != "" {
			errs = append(errs, metav1validation.ValidateLabelName(t.Key, tp.Child("key"))...)
		}
		if t.Key == "" && t.Operator != corev1.TolerationOpExists {
			errs = append(errs, field.Invalid(tp.Child("operator"), t.Operator, "operator must be Exists when `key` is empty, which means \"match all values and all keys\""))
		}
		if t.TolerationSeconds != nil && t.Effect != corev1.TaintEffectNoExecute {
			errs = append(errs, field.Invalid(tp.Child("effect"), t.Effect, "effect must be 'NoExecute' when `tolerationSeconds` is set"))
		}
		switch t.Operator {
		case corev1.TolerationOpEqual, "":
			errs = append(errs, validateFormat(tp.Child("value"), t.Value, validation.IsValidLabelValue)...)
		case corev1.TolerationOpExists:
			if t.Value != "" {
				errs = append(errs, field.Invalid(tp.Child("operator"), t.Value, "value must be empty when `operator` is 'Exists'"))
			}
		default:
			errs = append(errs, field.NotSupported(tp.Child("operator"), t.Operator, []string{string(corev1.TolerationOpEqual), string(corev1.TolerationOpExists)}))
		}
		if t.Effect != "" && !slices.Contains(podTaintEffects, string(t.Effect)) {
			errs = append(errs, field.NotSupported(tp.Child("effect"), t.Effect, podTaintEffects))
		}
	}
	return errs
}

func podValidateDNS(spec *corev1.PodSpec, p *field.Path) field.ErrorList {
	errs := validateOneOf(p.Child("dnsPolicy"), string(spec.DNSPolicy),
		string(corev1.DNSClusterFirstWithHostNet), string(corev1.DNSClusterFirst), string(corev1.DNSDefault), string(corev1.DNSNone))
	cp := p.Child("dnsConfig")
	cfg := spec.DNSConfig
	if spec.DNSPolicy == corev1.DNSNone {
		if cfg == nil {
			return append(errs, field.Required(cp, "must provide `dnsConfig` when `dnsPolicy` is None"))
		}
		if len(cfg.Nameservers) == 0 {
			errs = append(errs, field.Required(cp.Child("nameservers"), "must provide at least one DNS nameserver when `dnsPolicy` is None"))
		}
	}
	if cfg == nil {
		return errs
	}
	if len(cfg.Nameservers) > 3 {
		errs = append(errs, field.Invalid(cp.Child("nameservers"), cfg.Nameservers, "must not have more than 3 nameservers"))
	}
	for i, ns := range cfg.Nameservers {
		errs = append(errs, validateIP(cp.Child("nameservers").Index(i), ns, nil)...)
	}
	if len(cfg.Searches) > 32 {
		errs = append(errs, field.Invalid(cp.Child("searches"), cfg.Searches, "must not have more than 32 search paths"))
	}
	for i, s := range cfg.Searches {
		if s != "." {
			errs = append(errs, validateFormat(cp.Child("searches").Index(i), strings.TrimSuffix(s, "."), validation.IsDNS1123Subdomain)...)
		}
	}
	for i, o := range cfg.Options {
		if o.Name == "" {
			errs = append(errs, field.Required(cp.Child("options").Index(i).Child("name"), ""))
		}
	}
	return errs
}

func podValidateSpread(constraints []corev1.TopologySpreadConstraint, p *field.Path) field.ErrorList {
	var errs field.ErrorList
	seen := map[string]bool{}
	for i, c := range constraints {
		cp := p.Index(i)
		if c.MaxSkew <= 0 {
			errs = append(errs, field.Invalid(cp.Child("maxSkew"), c.MaxSkew, "must be greater than zero"))
		}
		errs = append(errs, validateRequiredFormat(cp.Child("topologyKey"), c.TopologyKey, validation.IsQualifiedName)...)
		errs = append(errs, validateOneOf(cp.Child("whenUnsatisfiable"), string(c.WhenUnsatisfiable),
			string(corev1.DoNotSchedule), string(corev1.ScheduleAnyway))...)
		key := c.TopologyKey + "/" + string(c.WhenUnsatisfiable)
		if seen[key] {
			errs = append(errs, field.Duplicate(cp, fmt.Sprintf("{%v, %v}", c.TopologyKey, c.WhenUnsatisfiable)))
		}
		seen[key] = true
	}
	return errs
}

// podUpdatable names, for the error message, the parts of a pod spec that an
// update may change.
const podUpdatable = "`spec.containers[*].image`, `spec.initContainers[*].image`, `spec.activeDeadlineSeconds`, " +
	"`spec.tolerations` (only additions to existing tolerations), `spec.schedulingGates` (only removals), " +
	"`spec.terminationGracePeriodSeconds` (only to 1 from a negative value)"

// podValidateSpecUpdate enforces that a pod's spec is fixed once created,
// but for container images, a shorter deadline, more tolerations and fewer
// scheduling gates. spec.nodeName is set on create or through the
// pods/binding subresource (binding.go), never by an update.
func podValidateSpecUpdate(spec, old *corev1.PodSpec, p *field.Path) field.ErrorList {
	if len(spec.Containers) != len(old.Containers) {
		return field.ErrorList{field.Forbidden(p.Child("containers"), "pod updates may not add or remove containers")}
	}
	if len(spec.InitContainers) != len(old.InitContainers) {
		return field.ErrorList{field.Forbidden(p.Child("initContainers"), "pod updates may not add or remove containers")}
	}
	var errs field.ErrorList
	dp := p.Child("activeDeadlineSeconds")
	switch d, od := spec.ActiveDeadlineSeconds, old.ActiveDeadlineSeconds; {
	case d == nil && od != nil:
		errs = append(errs, field.Invalid(dp, d, "must not update from a positive integer to nil value"))
	case d != nil && od != nil && *d > *od:
		errs = append(errs, field.Invalid(dp, *d, "must be less than or equal to previous value"))
	}
	for _, ot := range old.Tolerations {
		found := slices.ContainsFunc(spec.Tolerations, func(t corev1.Toleration) bool {
			ot.TolerationSeconds = t.TolerationSeconds
			return equality.Semantic.DeepEqual(ot, t)
		})
		if !found {
			errs = append(errs, field.Forbidden(p.Child("tolerations"), "existing toleration can not be modified except its tolerationSeconds"))
			break
		}
	}
	for i, g := range spec.SchedulingGates {
		if !slices.Contains(old.SchedulingGates, g) {
			errs = append(errs, field.Forbidden(p.Child("schedulingGates").Index(i), fmt.Sprintf("only deletion is allowed, but found new scheduling gate '%s'", g.Name)))
		}
	}
	if spec.NodeName != old.NodeName {
		msg := "may not be changed once set"
		if old.NodeName == "" {
			msg = "may not be set by an update; bind the pod through the pods/binding subresource"
		}
		errs = append(errs, field.Forbidden(p.Child("nodeName"), msg))
	}

	// Compare what is left with the updatable fields put back.
	m := spec.DeepCopy()
	for i := range m.Containers {
		m.Containers[i].Image = old.Containers[i].Image
	}
	for i := range m.InitContainers {
		m.InitContainers[i].Image = old.InitContainers[i].Image
	}
	m.ActiveDeadlineSeconds = old.ActiveDeadlineSeconds
	m.Tolerations = old.Tolerations
	m.SchedulingGates = old.SchedulingGates
	m.NodeName = old.NodeName
	if g, og := m.TerminationGracePeriodSeconds, old.TerminationGracePeriodSeconds; og != nil && *og < 0 && g != nil && *g == 1 {
		m.TerminationGracePeriodSeconds = og
	}
	if !equality.Semantic.DeepEqual(m, old) {
		changed := podChangedFields(reflect.ValueOf(*m), reflect.ValueOf(*old), p, 2)
		errs = append(errs, field.Forbidden(p, fmt.Sprintf("pod updates may not change fields other than %s (changed: %s)", podUpdatable, strings.Join(changed, ", "))))
	}
	return errs
}

// podChangedFields lists the paths at which two values of the same type
// differ, looking depth levels into structs and equally long slices.
func podChangedFields(a, b reflect.Value, p *field.Path, depth int) []string {
	if equality.Semantic.DeepEqual(a.Interface(), b.Interface()) {
		return nil
	}
	if depth > 0 {
		var out []string
		switch {
		case a.Kind() == reflect.Struct:
			for i := range a.NumField() {
				f := a.Type().Field(i)
				if !f.IsExported() {
					continue
				}
				name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
				fp := p.Child(name)
				if name == "" { // inlined struct
					fp = p
				}
				out = append(out, podChangedFields(a.Field(i), b.Field(i), fp, depth-1)...)
			}
			return out
		case a.Kind() == reflect.Slice && a.Len() == b.Len():
			for i := range a.Len() {
				out = append(out, podChangedFields(a.Index(i), b.Index(i), p.Index(i), depth)...)
			}
			return out
		}
	}
	return []string{p.String()}
}

// Validation of the status.

var podPhases = []string{
	string(corev1.PodPending), string(corev1.PodRunning), string(corev1.PodSucceeded),
	string(corev1.PodFailed), string(corev1.PodUnknown),
}

func podValidateStatusUpdate(_ context.Context, obj, old runtime.Object) field.ErrorList {
	pod, oldPod := obj.(*corev1.Pod), old.(*corev1.Pod)
	st, ost := &pod.Status, &oldPod.Status
	p := field.NewPath("status")
	errs := validateOneOf(p.Child("phase"), string(st.Phase), podPhases...)
	if st.NominatedNodeName != "" {
		errs = append(errs, validateNodeName(p.Child("nominatedNodeName"), st.NominatedNodeName)...)
	}
	podIPs := func(ips []corev1.PodIP) []string {
		out := make([]string, len(ips))
		for i, ip := range ips {
			out[i] = ip.IP
		}
		return out
	}
	hostIPs := func(ips []corev1.HostIP) []string {
		out := make([]string, len(ips))
		for i, ip := range ips {
			out[i] = ip.IP
		}
		return out
	}
	errs = append(errs, podValidateIPs(p.Child("podIPs"), podIPs(st.PodIPs), podIPs(ost.PodIPs))...)
	errs = append(errs, podValidateIPs(p.Child("hostIPs"), hostIPs(st.HostIPs), hostIPs(ost.HostIPs))...)

	sidecars := map[string]bool{}
	for _, c := range pod.Spec.InitContainers {
		if c.RestartPolicy != nil && *c.RestartPolicy == corev1.ContainerRestartPolicyAlways {
			sidecars[c.Name] = true
		}
	}
	policy := pod.Spec.RestartPolicy
	errs = append(errs, podValidateContainerStatuses(st.ContainerStatuses, ost.ContainerStatuses, p.Child("containerStatuses"),
		func(_ string, exitCode int32) bool {
			return policy == corev1.RestartPolicyAlways || (policy == corev1.RestartPolicyOnFailure && exitCode != 0)
		})...)
	errs = append(errs, podValidateContainerStatuses(st.InitContainerStatuses, ost.InitContainerStatuses, p.Child("initContainerStatuses"),
		func(name string, exitCode int32) bool {
			return sidecars[name] || (exitCode != 0 && policy != corev1.RestartPolicyNever)
		})...)
	errs = append(errs, podValidateContainerStatuses(st.EphemeralContainerStatuses, ost.EphemeralContainerStatuses, p.Child("ephemeralContainerStatuses"),
		func(string, int32) bool { return false })...)
	return errs
}

func podValidateIPs(p *field.Path, ips, old []string) field.ErrorList {
	var errs field.ErrorList
	for i, ip := range ips {
		errs = append(errs, validateIP(p.Index(i).Child("ip"), ip, old)...)
	}
	if len(errs) == 0 {
		errs = validateDualStack(p, ips)
	}
	return errs
}

// podValidateContainerStatuses checks that restart counts are not negative
// and that a terminated container comes back only if canRestart allows it
// for its last exit code.
func podValidateContainerStatuses(statuses, old []corev1.ContainerStatus, p *field.Path, canRestart func(name string, exitCode int32) bool) field.ErrorList {
	var errs field.ErrorList
	for i, s := range statuses {
		sp := p.Index(i)
		errs = append(errs, apimachineryvalidation.ValidateNonnegativeField(int64(s.RestartCount), sp.Child("restartCount"))...)
		j := slices.IndexFunc(old, func(o corev1.ContainerStatus) bool { return o.Name == s.Name })
		if j < 0 {
			continue
		}
		if t := old[j].State.Terminated; t != nil && s.State.Terminated == nil && !canRestart(s.Name, t.ExitCode) {
			errs = append(errs, field.Forbidden(sp.Child("state"), "may not be transitioned to non-terminated state"))
		}
	}
	return errs
}

// Field selectors.

func podFields(obj runtime.Object) fields.Set {
	pod := obj.(*corev1.Pod)
	podIP := pod.Status.PodIP
	if len(pod.Status.PodIPs) > 0 {
		podIP = pod.Status.PodIPs[0].IP
	}
	return fields.Set{
		"spec.nodeName":            pod.Spec.NodeName,
		"spec.restartPolicy":       string(pod.Spec.RestartPolicy),
		"spec.schedulerName":       pod.Spec.SchedulerName,
		"spec.serviceAccountName":  pod.Spec.ServiceAccountName,
		"spec.hostNetwork":         strconv.FormatBool(pod.Spec.HostNetwork),
		"status.phase":             string(pod.Status.Phase),
		"status.podIP":             podIP,
		"status.nominatedNodeName": pod.Status.NominatedNodeName,
	}
}

// Table.

var podColumns = []metav1.TableColumnDefinition{
	NameColumn,
	{Name: "Ready", Type: "string", Description: "Ready containers out of all containers of the pod."},
	{Name: "Status", Type: "string", Description: "The phase of the pod, or the reason its containers are not running."},
	{Name: "Restarts", Type: "string", Description: "How often the pod's containers restarted, and how long ago the last one did."},
	AgeColumn,
	{Name: "IP", Type: "string", Priority: 1, Description: corev1.PodStatus{}.SwaggerDoc()["podIP"]},
	{Name: "Node", Type: "string", Priority: 1, Description: corev1.PodSpec{}.SwaggerDoc()["nodeName"]},
	{Name: "Nominated Node", Type: "string", Priority: 1, Description: corev1.PodStatus{}.SwaggerDoc()["nominatedNodeName"]},
	{Name: "Readiness Gates", Type: "string", Priority: 1, Description: corev1.PodSpec{}.SwaggerDoc()["readinessGates"]},
}

func podRow(obj runtime.Object) []interface{} {
	pod := obj.(*corev1.Pod)
	s := podSummarize(pod)
	restarts := strconv.Itoa(s.restarts)
	if s.restarts > 0 && !s.lastRestart.IsZero() {
		restarts = fmt.Sprintf("%d (%s ago)", s.restarts, Age(s.lastRestart))
	}
	ip := ""
	if len(pod.Status.PodIPs) > 0 {
		ip = pod.Status.PodIPs[0].IP
	}
	gates := "<none>"
	if n := len(pod.Spec.ReadinessGates); n > 0 {
		ready := 0
		for _, g := range pod.Spec.ReadinessGates {
			if c := podCondition(pod, g.ConditionType); c != nil && c.Status == corev1.ConditionTrue {
				ready++
			}
		}
		gates = fmt.Sprintf("%d/%d", ready, n)
	}
	return []interface{}{
		pod.Name,
		fmt.Sprintf("%d/%d", s.ready, s.total),
		s.status,
		restarts,
		Age(pod.CreationTimestamp),
		coreOrNone(ip),
		coreOrNone(pod.Spec.NodeName),
		coreOrNone(pod.Status.NominatedNodeName),
		gates,
	}
}

// podSummary is what kubectl get pods shows of a pod's containers.
type podSummary struct {
	ready, total int
	status       string
	restarts     int
	lastRestart  metav1.Time
}

// podSummarize works out the READY, STATUS and RESTARTS columns. STATUS is
// the pod's phase (or the reason the kubelet gave), replaced by what holds
// the pod back: the first unfinished init container ("Init:1/2",
// "Init:CrashLoopBackOff"), else the first regular container that is
// waiting or terminated ("ContainerCreating", "Completed", "Error"), and
// finally "Terminating" while the pod is deleted.
func podSummarize(pod *corev1.Pod) podSummary {
	s := podSummary{total: len(pod.Spec.Containers), status: string(pod.Status.Phase)}
	if pod.Status.Reason != "" {
		s.status = pod.Status.Reason
	}
	if c := podCondition(pod, corev1.PodScheduled); c != nil && c.Status == corev1.ConditionFalse && c.Reason == corev1.PodReasonSchedulingGated {
		s.status = corev1.PodReasonSchedulingGated
	}

	// Sidecars (restartable init containers) count as containers of the pod.
	sidecars := map[string]bool{}
	for _, c := range pod.Spec.InitContainers {
		if c.RestartPolicy != nil && *c.RestartPolicy == corev1.ContainerRestartPolicyAlways {
			sidecars[c.Name] = true
			s.total++
		}
	}

	var sidecarRestarts int
	var sidecarLast metav1.Time
	initializing := false
	for i, cs := range pod.Status.InitContainerStatuses {
		s.restarts += int(cs.RestartCount)
		s.lastRestart = podLastRestart(s.lastRestart, cs)
		if sidecars[cs.Name] {
			sidecarRestarts += int(cs.RestartCount)
			sidecarLast = podLastRestart(sidecarLast, cs)
		}
		if t := cs.State.Terminated; t != nil && t.ExitCode == 0 {
			continue // done
		}
		if sidecars[cs.Name] && cs.Started != nil && *cs.Started {
			if cs.Ready {
				s.ready++
			}
			continue
		}
		initializing = true
		switch w := cs.State.Waiting; {
		case cs.State.Terminated != nil:
			s.status = podTerminatedReason("Init:", cs.State.Terminated)
		case w != nil && w.Reason != "" && w.Reason != "PodInitializing":
			s.status = "Init:" + w.Reason
		default:
			s.status = fmt.Sprintf("Init:%d/%d", i, len(pod.Spec.InitContainers))
		}
		break
	}

	if c := podCondition(pod, corev1.PodInitialized); !initializing || (c != nil && c.Status == corev1.ConditionTrue) {
		// Once initialized, only sidecars' restarts still count.
		s.restarts, s.lastRestart = sidecarRestarts, sidecarLast
		running := false
		// Walk backwards so that the first container's reason wins.
		for i := len(pod.Status.ContainerStatuses) - 1; i >= 0; i-- {
			cs := pod.Status.ContainerStatuses[i]
			s.restarts += int(cs.RestartCount)
			s.lastRestart = podLastRestart(s.lastRestart, cs)
			switch w, t := cs.State.Waiting, cs.State.Terminated; {
			case w != nil && w.Reason != "":
				s.status = w.Reason
			case t != nil:
				s.status = podTerminatedReason("", t)
			case cs.Ready && cs.State.Running != nil:
				running = true
				s.ready++
			}
		}
		// A pod whose finished containers leave others running is running.
		if s.status == "Completed" && running {
			s.status = "NotReady"
			if c := podCondition(pod, corev1.PodReady); c != nil && c.Status == corev1.ConditionTrue {
				s.status = "Running"
			}
		}
	}

	if pod.DeletionTimestamp != nil {
		switch {
		case pod.Status.Reason == "NodeLost":
			s.status = "Unknown"
		case pod.Status.Phase != corev1.PodSucceeded && pod.Status.Phase != corev1.PodFailed:
			s.status = "Terminating"
		}
	}
	return s
}

// podTerminatedReason names how a container ended: the kubelet's reason,
// else the signal or exit code.
func podTerminatedReason(prefix string, t *corev1.ContainerStateTerminated) string {
	switch {
	case t.Reason != "":
		return prefix + t.Reason
	case t.Signal != 0:
		return fmt.Sprintf("%sSignal:%d", prefix, t.Signal)
	}
	return fmt.Sprintf("%sExitCode:%d", prefix, t.ExitCode)
}

// podLastRestart returns the later of last and the time the container's
// previous run ended.
func podLastRestart(last metav1.Time, cs corev1.ContainerStatus) metav1.Time {
	if t := cs.LastTerminationState.Terminated; t != nil && last.Before(&t.FinishedAt) {
		return t.FinishedAt
	}
	return last
}

func podCondition(pod *corev1.Pod, t corev1.PodConditionType) *corev1.PodCondition {
	for i := range pod.Status.Conditions {
		if pod.Status.Conditions[i].Type == t {
			return &pod.Status.Conditions[i]
		}
	}
	return nil
}
