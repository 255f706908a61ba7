package storage

import (
	"context"
	"errors"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apiserver/pkg/registry/generic"
	apistorage "k8s.io/apiserver/pkg/storage"
	"k8s.io/apiserver/pkg/storage/storagebackend"
	"k8s.io/apiserver/pkg/storage/storagebackend/factory"
	"k8s.io/client-go/tools/cache"
)

// withDeadlineStatus makes a read that fails because the request's
// deadline passed (its ?timeout=, or the server's 60 s) answer 504 Timeout
// instead of 500. The API server runs requests without upstream's timeout
// filter (see apiserver/chain.go), which used to send that 504; writes get
// it from the handlers themselves.
func withDeadlineStatus(d generic.StorageDecorator) generic.StorageDecorator {
	return func(cfg *storagebackend.ConfigForResource, resourcePrefix string,
		keyFunc func(runtime.Object) (string, error), newFunc, newListFunc func() runtime.Object,
		attrs apistorage.AttrFunc, triggers apistorage.IndexerFuncs, indexers *cache.Indexers,
	) (apistorage.Interface, factory.DestroyFunc, error) {
		s, destroy, err := d(cfg, resourcePrefix, keyFunc, newFunc, newListFunc, attrs, triggers, indexers)
		if err != nil {
			return s, destroy, err
		}
		return deadlineStatus{s}, destroy, nil
	}
}

type deadlineStatus struct{ apistorage.Interface }

func (s deadlineStatus) Get(ctx context.Context, key string, opts apistorage.GetOptions, out runtime.Object) error {
	return asTimeout(ctx, s.Interface.Get(ctx, key, opts, out))
}

func (s deadlineStatus) GetList(ctx context.Context, key string, opts apistorage.ListOptions, out runtime.Object) error {
	return asTimeout(ctx, s.Interface.GetList(ctx, key, opts, out))
}

// asTimeout turns err into a Timeout Status if the request's deadline has
// passed and err is not already an answer (a Status, or a storage error
// such as not found that the registry maps to one).
func asTimeout(ctx context.Context, err error) error {
	if err == nil || !errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return err
	}
	var status apierrors.APIStatus
	var storageErr *apistorage.StorageError
	if errors.As(err, &status) || errors.As(err, &storageErr) {
		return err
	}
	return apierrors.NewTimeoutError("the request did not complete before its deadline; retry it, or give it a longer ?timeout=", 0)
}
