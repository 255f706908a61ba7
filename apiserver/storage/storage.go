// Package storage connects the API server to etcd: it runs the embedded
// etcd member (the default) or describes an external cluster, and hands the
// generic registry the storage options (codec, key prefix, watch cache) for
// each resource. resourceVersion is the etcd revision throughout.
package storage

import (
	"fmt"
	"time"

	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apiserver/pkg/registry/generic"
	genericregistry "k8s.io/apiserver/pkg/registry/generic/registry"
	serverstorage "k8s.io/apiserver/pkg/server/storage"
	"k8s.io/apiserver/pkg/storage/storagebackend"

	"tether/apiserver/scheme"
)

// Prefix is the etcd key prefix under which every object is stored.
const Prefix = "/registry"

// Backend says where etcd is and how to reach it.
type Backend struct {
	// Servers are the etcd client URLs (https://…, or unix:///path for the
	// embedded member).
	Servers []string
	// CAFile, CertFile and KeyFile secure the connection; empty for a unix
	// socket.
	CAFile, CertFile, KeyFile string
	// Prefix replaces the default key prefix if set.
	Prefix string
	// Local, if set, is the embedded member in this process: the API
	// server's resource storage calls it directly, and Servers remain for
	// everything else (health checks, allocators, tools).
	Local *Embedded
}

// Config returns the generic storage backend configuration.
func (b Backend) Config() storagebackend.Config {
	prefix := b.Prefix
	if prefix == "" {
		prefix = Prefix
	}
	c := storagebackend.NewDefaultConfig(prefix, nil)
	c.Transport.ServerList = b.Servers
	c.Transport.TrustedCAFile = b.CAFile
	c.Transport.CertFile = b.CertFile
	c.Transport.KeyFile = b.KeyFile
	c.CompactionInterval = 5 * time.Minute
	return *c
}

// RESTOptions gives each resource its storage: protobuf in etcd, stored as
// the served version, behind a watch cache.
type RESTOptions struct {
	Backend Backend
	// DisableWatchCache serves every read from etcd (for tests of raw paths).
	DisableWatchCache bool
}

var _ generic.RESTOptionsGetter = RESTOptions{}

// GetRESTOptions implements generic.RESTOptionsGetter.
func (o RESTOptions) GetRESTOptions(gr schema.GroupResource, _ runtime.Object) (generic.RESTOptions, error) {
	cfg := o.Backend.Config()
	if gr == eventsV1 {
		// events.k8s.io/v1 is another view of the core events: same keys,
		// same stored form.
		gr = schema.GroupResource{Resource: "events"}
	}
	gv, err := storageVersion(gr.Group)
	if err != nil {
		return generic.RESTOptions{}, err
	}
	codec, _, err := serverstorage.NewStorageCodec(serverstorage.StorageCodecConfig{
		StorageMediaType:  runtime.ContentTypeProtobuf,
		StorageSerializer: scheme.Codecs,
		StorageVersion:    gv,
		MemoryVersion:     scheme.Internal(gr.Group),
		Config:            cfg,
	})
	if err != nil {
		return generic.RESTOptions{}, fmt.Errorf("storage: codec for %s: %w", gr, err)
	}
	cfg.Codec = codec
	prefix := gr.Resource
	if gr.Group != "" {
		prefix = gr.Group + "/" + gr.Resource
	}
	var decorator generic.StorageDecorator
	switch {
	case o.Backend.Local != nil:
		decorator = o.Backend.Local.decorator(!o.DisableWatchCache)
	case o.DisableWatchCache:
		decorator = generic.UndecoratedStorage
	default:
		decorator = genericregistry.StorageWithCacher()
	}
	decorator = withDeadlineStatus(decorator)
	return generic.RESTOptions{
		StorageConfig:           cfg.ForResource(gr),
		Decorator:               decorator,
		EnableGarbageCollection: false,
		DeleteCollectionWorkers: 1,
		ResourcePrefix:          prefix,
	}, nil
}

var eventsV1 = schema.GroupResource{Group: "events.k8s.io", Resource: "events"}

// storageVersion returns the version a group's objects are stored in.
func storageVersion(group string) (schema.GroupVersion, error) {
	for _, gv := range scheme.Served {
		if gv.Group == group {
			return gv, nil
		}
	}
	return schema.GroupVersion{}, fmt.Errorf("storage: group %q is not served", group)
}
