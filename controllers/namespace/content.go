package namespace

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/discovery"
)

// errContentRemaining means objects are still left in the namespace, most
// often pods that are shutting down gracefully or objects held by
// finalizers. The namespace is retried with back-off.
var errContentRemaining = errors.New("namespace: content remaining")

// target is a namespaced resource whose objects the controller deletes.
type target struct {
	gvr schema.GroupVersionResource
	// deleteCollection and delete report which deletion verbs the
	// resource supports; at least one is true.
	deleteCollection bool
	delete           bool
}

// targets returns the namespaced resources that can be listed and deleted.
// Discovery may fail for some API groups only (an aggregated API that is
// down, say): the resources that did come back are still returned, together
// with the error, so that the caller can delete what it can but must not
// finalize the namespace yet.
func (c *Controller) targets(ctx context.Context) ([]target, error) {
	lists, discErr := discovery.ServerPreferredNamespacedResourcesWithContext(ctx, discovery.ToDiscoveryInterfaceWithContext(c.discovery))
	var errs []error
	if discErr != nil {
		errs = append(errs, fmt.Errorf("discover namespaced resources: %w", discErr))
	}
	var out []target
	for _, list := range lists {
		gv, err := schema.ParseGroupVersion(list.GroupVersion)
		if err != nil {
			errs = append(errs, fmt.Errorf("discover namespaced resources: %w", err))
			continue
		}
		for _, r := range list.APIResources {
			if strings.Contains(r.Name, "/") { // a subresource such as pods/status
				continue
			}
			t := target{
				gvr:              gv.WithResource(r.Name),
				deleteCollection: slices.Contains(r.Verbs, "deletecollection"),
				delete:           slices.Contains(r.Verbs, "delete"),
			}
			if !slices.Contains(r.Verbs, "list") || (!t.deleteCollection && !t.delete) {
				continue
			}
			out = append(out, t)
		}
	}
	return out, errors.Join(errs...)
}

// deleteContent deletes every object in namespace ns and reports whether
// anything is left. It returns nil only when every discovered resource is
// empty; errContentRemaining (wrapped) when deletion went through but
// objects remain; another error when discovery or a deletion failed.
func (c *Controller) deleteContent(ctx context.Context, ns string) error {
	targets, err := c.targets(ctx)
	var errs []error
	if err != nil {
		errs = append(errs, err)
	}
	for _, t := range targets {
		if err := c.deleteAll(ctx, ns, t); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("delete content of namespace %q: %w", ns, errors.Join(errs...))
	}

	var remaining []string
	for _, t := range targets {
		n, err := c.count(ctx, ns, t.gvr)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if n > 0 {
			remaining = append(remaining, fmt.Sprintf("%s: %d", t.gvr.GroupResource(), n))
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("check content of namespace %q: %w", ns, errors.Join(errs...))
	}
	if len(remaining) > 0 {
		return fmt.Errorf("%w: %s", errContentRemaining, strings.Join(remaining, ", "))
	}
	return nil
}

// deleteAll deletes the objects of one resource in namespace ns: with a
// single deletecollection call when the resource supports it, otherwise
// one by one. Dependents are left to the garbage collector (background
// propagation).
func (c *Controller) deleteAll(ctx context.Context, ns string, t target) error {
	client := c.metadata.Resource(t.gvr).Namespace(ns)
	background := metav1.DeletePropagationBackground
	resource := t.gvr.GroupResource().String()

	if t.deleteCollection {
		err := client.DeleteCollection(ctx, metav1.DeleteOptions{PropagationPolicy: &background}, metav1.ListOptions{})
		switch {
		case err == nil, apierrors.IsNotFound(err): // NotFound: the resource went away since discovery
			return nil
		case apierrors.IsMethodNotSupported(err) && t.delete:
			c.log.Debug("deletecollection not supported, deleting one by one", "name", ns, "resource", resource)
		default:
			return fmt.Errorf("delete collection of %s: %w", resource, err)
		}
	}

	list, err := client.List(ctx, metav1.ListOptions{})
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("list %s: %w", resource, err)
	}
	for _, item := range list.Items {
		if item.DeletionTimestamp != nil {
			continue // already being deleted
		}
		uid := item.UID
		opts := metav1.DeleteOptions{PropagationPolicy: &background}
		if uid != "" {
			opts.Preconditions = &metav1.Preconditions{UID: &uid}
		}
		err := client.Delete(ctx, item.Name, opts)
		// NotFound: already gone. Conflict: gone and recreated under the
		// same name; the next pass deletes the new object.
		if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
			return fmt.Errorf("delete %s %q: %w", resource, item.Name, err)
		}
	}
	return nil
}

// count returns how many objects of resource gvr are left in namespace ns.
func (c *Controller) count(ctx context.Context, ns string, gvr schema.GroupVersionResource) (int, error) {
	list, err := c.metadata.Resource(gvr).Namespace(ns).List(ctx, metav1.ListOptions{})
	if apierrors.IsNotFound(err) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("list %s: %w", gvr.GroupResource(), err)
	}
	return len(list.Items), nil
}
