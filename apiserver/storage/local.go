package storage

import (
	"sync"

	"go.etcd.io/etcd/client/v3/kubernetes"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apiserver/pkg/registry/generic"
	apistorage "k8s.io/apiserver/pkg/storage"
	"k8s.io/apiserver/pkg/storage/cacher"
	"k8s.io/apiserver/pkg/storage/etcd3"
	"k8s.io/apiserver/pkg/storage/storagebackend"
	"k8s.io/apiserver/pkg/storage/storagebackend/factory"
	"k8s.io/apiserver/pkg/storage/value/encrypt/identity"
	"k8s.io/client-go/tools/cache"
)

// decorator builds a resource's storage on the in-process client: the etcd3
// store the generic registry would build, minus the gRPC connection, and
// (if cached) the same watch cache in front of it.
func (e *Embedded) decorator(cached bool) generic.StorageDecorator {
	return func(cfg *storagebackend.ConfigForResource, resourcePrefix string,
		keyFunc func(runtime.Object) (string, error), newFunc, newListFunc func() runtime.Object,
		attrs apistorage.AttrFunc, triggers apistorage.IndexerFuncs, indexers *cache.Indexers,
	) (apistorage.Interface, factory.DestroyFunc, error) {
		client, compactor, err := e.local()
		if err != nil {
			return nil, nil, err
		}
		kc := &kubernetes.Client{Client: client}
		kc.Kubernetes = kc
		versioner := apistorage.APIObjectVersioner{}
		transformer := cfg.Transformer
		if transformer == nil {
			transformer = identity.NewEncryptCheckTransformer()
		}
		store, err := etcd3.New(kc, compactor, cfg.Codec, newFunc, newListFunc, cfg.Prefix, resourcePrefix,
			cfg.GroupResource, transformer, cfg.LeaseManagerConfig, etcd3.NewDefaultDecoder(cfg.Codec, versioner), versioner)
		if err != nil {
			return nil, nil, err
		}
		// The client is shared by every resource and closed by Run: a
		// resource's destroy closes only what it opened.
		if !cached {
			var once sync.Once
			return store, func() { once.Do(store.Close) }, nil
		}
		c, err := cacher.NewCacherFromConfig(cacher.Config{
			Storage:             store,
			Versioner:           versioner,
			GroupResource:       cfg.GroupResource,
			EventsHistoryWindow: cfg.EventsHistoryWindow,
			ResourcePrefix:      resourcePrefix,
			KeyFunc:             keyFunc,
			NewFunc:             newFunc,
			NewListFunc:         newListFunc,
			GetAttrsFunc:        attrs,
			IndexerFuncs:        triggers,
			Indexers:            indexers,
			Codec:               cfg.Codec,
		})
		if err != nil {
			store.Close()
			return nil, nil, err
		}
		delegator := cacher.NewCacheDelegator(c, store)
		var once sync.Once
		return delegator, func() {
			once.Do(func() {
				delegator.Stop()
				c.Stop()
				store.Close()
			})
		}, nil
	}
}
