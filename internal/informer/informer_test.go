package informer

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/tools/cache"
)

func TestFactoryStripsManagedFields(t *testing.T) {
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{
		Namespace: "default", Name: "a", Labels: map[string]string{"k": "v"},
		ManagedFields: []metav1.ManagedFieldsEntry{{Manager: "kubectl", Operation: metav1.ManagedFieldsOperationUpdate}},
	}}
	client := fake.NewClientset(cm)
	f := NewFactory(client, 0)
	lister := f.Core().V1().ConfigMaps().Lister()
	stop := make(chan struct{})
	f.Start(stop)
	defer f.Shutdown() // after stop is closed
	defer close(stop)
	if !cache.WaitForCacheSync(stop, f.Core().V1().ConfigMaps().Informer().HasSynced) {
		t.Fatal("cache never synced")
	}
	got, err := lister.ConfigMaps("default").Get("a")
	if err != nil {
		t.Fatal(err)
	}
	if got.ManagedFields != nil {
		t.Errorf("cached ConfigMap keeps managedFields %v", got.ManagedFields)
	}
	if got.Labels["k"] != "v" {
		t.Errorf("cached ConfigMap lost its labels: %v", got.Labels)
	}
}

func TestStripManagedFieldsPassesTombstones(t *testing.T) {
	tomb := cache.DeletedFinalStateUnknown{Key: "default/a"}
	got, err := stripManagedFields(tomb)
	if err != nil || got != tomb {
		t.Errorf("stripManagedFields(tombstone) = %v, %v; want it unchanged", got, err)
	}
}
