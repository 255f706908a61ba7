package registry

import (
	"context"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/duration"
	"k8s.io/apiserver/pkg/registry/rest"
)

// table builds server-side Tables for kubectl get from a Resource's
// Columns and Row.
type table struct {
	res      *Resource
	fallback rest.TableConvertor
}

func newTable(res *Resource) rest.TableConvertor {
	return &table{res: res, fallback: rest.NewDefaultTableConvertor(res.GroupResource())}
}

// ConvertToTable implements rest.TableConvertor.
func (t *table) ConvertToTable(ctx context.Context, obj runtime.Object, opts runtime.Object) (*metav1.Table, error) {
	if t.res.Row == nil {
		return t.fallback.ConvertToTable(ctx, obj, opts)
	}
	out := &metav1.Table{ColumnDefinitions: t.res.Columns}
	add := func(o runtime.Object) error {
		out.Rows = append(out.Rows, metav1.TableRow{Cells: t.res.Row(o), Object: runtime.RawExtension{Object: o}})
		return nil
	}
	if meta.IsListType(obj) {
		if err := meta.EachListItem(obj, add); err != nil {
			return nil, err
		}
	} else if err := add(obj); err != nil {
		return nil, err
	}
	if l, err := meta.ListAccessor(obj); err == nil {
		out.ResourceVersion = l.GetResourceVersion()
		out.Continue = l.GetContinue()
		out.RemainingItemCount = l.GetRemainingItemCount()
	} else if m, err := meta.Accessor(obj); err == nil {
		out.ResourceVersion = m.GetResourceVersion()
	}
	return out, nil
}

// Column definitions shared by many resources.
var (
	NameColumn = metav1.TableColumnDefinition{Name: "Name", Type: "string", Format: "name", Description: "Name must be unique within a namespace."}
	AgeColumn  = metav1.TableColumnDefinition{Name: "Age", Type: "string", Description: "Time since the object was created."}
)

// Age formats the time since t the way kubectl prints ages.
func Age(t metav1.Time) string {
	if t.IsZero() {
		return "<unknown>"
	}
	return duration.HumanDuration(time.Since(t.Time))
}
