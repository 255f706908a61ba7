package apiserver

import (
	"runtime"

	apimachineryversion "k8s.io/apimachinery/pkg/version"
	basecompatibility "k8s.io/component-base/compatibility"
)

// KubernetesVersion is the Kubernetes release whose API tether serves.
const KubernetesVersion = "1.37.2"

// gitVersion is what /version reports as gitVersion. The minor version 37 is
// deliberate: the kubectl dispatcher on Debian machines re-executes an older
// kubectl for minors 28–33 and keeps its built-in one otherwise.
func gitVersion(tether string) string {
	return "v" + KubernetesVersion + "+tether." + tether
}

// effectiveVersion is the upstream effective version with tether's own
// /version answer.
type effectiveVersion struct {
	basecompatibility.MutableEffectiveVersion
	info apimachineryversion.Info
}

func newEffectiveVersion(tether string) *effectiveVersion {
	ev := basecompatibility.NewEffectiveVersionFromString(KubernetesVersion, "", "")
	info := *ev.Info()
	info.GitVersion = gitVersion(tether)
	info.GitTreeState = "clean"
	info.GoVersion = runtime.Version()
	info.Compiler = runtime.Compiler
	info.Platform = runtime.GOOS + "/" + runtime.GOARCH
	return &effectiveVersion{MutableEffectiveVersion: ev, info: info}
}

// Info implements basecompatibility.EffectiveVersion.
func (v *effectiveVersion) Info() *apimachineryversion.Info {
	info := v.info
	return &info
}
