package rbac

import (
	"strings"

	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apiserver/pkg/authorization/authorizer"
)

// Rule matching, as Kubernetes RBAC does it.
//
// A resource request matches a rule when the rule names its verb, its API
// group and its resource, and, if the rule lists resourceNames, the name of
// the object. "*" in verbs, apiGroups or resources stands for any. A request
// for a subresource (pods/log) matches the resource "pods/log" or
// "*/log"; it does not match "pods", and "pods/*" matches nothing: upstream
// deliberately has no wildcard for all subresources of one resource, since
// it would grant subresources added later. A rule with resourceNames never
// matches a request without a name (create, list, watch of a collection).
//
// A non-resource request (a path such as /healthz) matches a rule when the
// rule names its verb and its path, either exactly or through a trailing
// "*" that matches any path with the part before it as a prefix.
//
// The functions below do not allocate: they are on the path of every
// request.

// ruleAllows reports whether rule permits the request attrs.
func ruleAllows(attrs authorizer.Attributes, rule *rbacv1.PolicyRule) bool {
	if !verbMatches(rule.Verbs, attrs.GetVerb()) {
		return false
	}
	if !attrs.IsResourceRequest() {
		return nonResourceURLMatches(rule.NonResourceURLs, attrs.GetPath())
	}
	return groupMatches(rule.APIGroups, attrs.GetAPIGroup()) &&
		resourceMatches(rule.Resources, attrs.GetResource(), attrs.GetSubresource()) &&
		nameMatches(rule.ResourceNames, attrs.GetName())
}

func verbMatches(verbs []string, verb string) bool {
	for _, v := range verbs {
		if v == rbacv1.VerbAll || v == verb {
			return true
		}
	}
	return false
}

func groupMatches(groups []string, group string) bool {
	for _, g := range groups {
		if g == rbacv1.APIGroupAll || g == group {
			return true
		}
	}
	return false
}

// resourceMatches matches resource and subresource of a request against
// the resources of a rule.
func resourceMatches(resources []string, resource, subresource string) bool {
	for _, r := range resources {
		if r == rbacv1.ResourceAll {
			return true
		}
		if subresource == "" {
			if r == resource {
				return true
			}
			continue
		}
		// r must be "<resource>/<subresource>" or "*/<subresource>".
		head, tail, ok := strings.Cut(r, "/")
		if ok && tail == subresource && (head == resource || head == rbacv1.ResourceAll) {
			return true
		}
	}
	return false
}

func nameMatches(names []string, name string) bool {
	if len(names) == 0 {
		return true
	}
	for _, n := range names {
		if n == name {
			return true
		}
	}
	return false
}

func nonResourceURLMatches(urls []string, path string) bool {
	for _, u := range urls {
		if u == rbacv1.NonResourceAll || u == path {
			return true
		}
		if strings.HasSuffix(u, "*") && strings.HasPrefix(path, strings.TrimRight(u, "*")) {
			return true
		}
	}
	return false
}
