// Package informer makes the shared informer factories of tether's
// controllers, scheduler, kubelet and proxy. Their caches keep objects
// without managedFields: nothing reads them there, and at a thousand nodes
// they are a large part of every cached Node and Lease. An update built
// from a cached object leaves the stored managedFields as they are, since
// the API server keeps them when an update carries none.
package informer

import (
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
)

// NewFactory is informers.NewSharedInformerFactoryWithOptions with
// managedFields stripped from every cached object.
func NewFactory(client kubernetes.Interface, resync time.Duration, opts ...informers.SharedInformerOption) informers.SharedInformerFactory {
	opts = append([]informers.SharedInformerOption{informers.WithTransform(stripManagedFields)}, opts...)
	return informers.NewSharedInformerFactoryWithOptions(client, resync, opts...)
}

// stripManagedFields drops an object's managedFields before it is cached;
// anything that is not an object (a tombstone) passes unchanged.
func stripManagedFields(obj any) (any, error) {
	if m, err := meta.Accessor(obj); err == nil && m.GetManagedFields() != nil {
		m.SetManagedFields(nil)
	}
	return obj, nil
}
