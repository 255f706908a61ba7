package registry

import (
	"context"
	"fmt"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/validate/content"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/validation/field"
)

// Length limits of event fields.
const (
	eventMaxReason   = 128
	eventMaxAction   = 128
	eventMaxInstance = 128
	eventMaxNote     = 1024
)

// Events is core/v1 Event.
//
// Validation follows upstream for the core API with one relaxation: an event
// about a cluster-scoped object (empty involvedObject.namespace) may live in
// any namespace, not only "default". Events that set eventTime (the newer
// style) must also name their reporter, action and reason.
// EventTTL is how long an event lives after its last update, like
// upstream's --event-ttl default; etcd deletes it then.
const EventTTL = time.Hour

var Events = &Resource{
	TTL:        EventTTL,
	GVK:        corev1.SchemeGroupVersion.WithKind("Event"),
	Resource:   "events",
	ShortNames: []string{"ev"},
	Namespaced: true,
	New:        func() runtime.Object { return &corev1.Event{} },
	NewList:    func() runtime.Object { return &corev1.EventList{} },

	Validate: func(_ context.Context, obj runtime.Object) field.ErrorList {
		return eventValidate(obj.(*corev1.Event), eventCorePaths)
	},

	Fields:  eventFields,
	Columns: eventColumns,
	Row:     eventRow,
}

// EventsV1 is events.k8s.io/v1 Event. It is a second view of the core
// Event: the scheme converts events.k8s.io/v1 objects to core Events, so
// storage, validation and tables see a *corev1.Event.
//
// Objects written through this API are checked more strictly, as upstream:
// eventTime, type (Normal or Warning), reportingController,
// reportingInstance, action and reason are required, the deprecated fields
// must be unset, and an update may change only series and metadata.
var EventsV1 = &Resource{
	TTL:        EventTTL,
	GVK:        eventsv1.SchemeGroupVersion.WithKind("Event"),
	Resource:   "events",
	ShortNames: []string{"ev"},
	Namespaced: true,
	New:        func() runtime.Object { return &corev1.Event{} },
	NewList:    func() runtime.Object { return &corev1.EventList{} },

	Validate: func(_ context.Context, obj runtime.Object) field.ErrorList {
		return eventValidateV1(obj.(*corev1.Event))
	},
	ValidateUpdate: func(_ context.Context, obj, old runtime.Object) field.ErrorList {
		ev, oldEv := obj.(*corev1.Event), old.(*corev1.Event)
		return append(eventValidateV1(ev), eventValidateV1Update(ev, oldEv)...)
	},

	Fields:  eventFields,
	Columns: eventColumns,
	Row:     eventRow,
}

// eventPaths names the fields of an Event in error messages, so that a
// client reads the names of the API it used.
type eventPaths struct {
	regarding, note, reportingController, source, firstTimestamp, lastTimestamp, count string
}

var (
	eventCorePaths = eventPaths{"involvedObject", "message", "reportingComponent", "source", "firstTimestamp", "lastTimestamp", "count"}
	eventV1Paths   = eventPaths{"regarding", "note", "reportingController", "deprecatedSource", "deprecatedFirstTimestamp", "deprecatedLastTimestamp", "deprecatedCount"}
)

// eventValidate holds the checks that apply whichever API wrote the event.
func eventValidate(ev *corev1.Event, paths eventPaths) field.ErrorList {
	var errs field.ErrorList
	if ns := ev.InvolvedObject.Namespace; ns != "" && ns != ev.Namespace {
		errs = append(errs, field.Invalid(field.NewPath(paths.regarding, "namespace"), ns, "does not match event.namespace"))
	}
	if len(ev.Reason) > eventMaxReason {
		errs = append(errs, field.TooLong(field.NewPath("reason"), "", eventMaxReason))
	}
	if ev.EventTime.IsZero() {
		// An old-style event: no more is asked of it.
		return errs
	}
	rc := field.NewPath(paths.reportingController)
	if ev.ReportingController == "" {
		errs = append(errs, field.Required(rc, ""))
	} else {
		for _, msg := range content.IsQualifiedName(ev.ReportingController) {
			errs = append(errs, field.Invalid(rc, ev.ReportingController, msg))
		}
	}
	errs = append(errs, eventRequired(field.NewPath("reportingInstance"), ev.ReportingInstance, eventMaxInstance)...)
	errs = append(errs, eventRequired(field.NewPath("action"), ev.Action, eventMaxAction)...)
	if ev.Reason == "" {
		errs = append(errs, field.Required(field.NewPath("reason"), ""))
	}
	if len(ev.Message) > eventMaxNote {
		errs = append(errs, field.TooLong(field.NewPath(paths.note), "", eventMaxNote))
	}
	return errs
}

func eventRequired(p *field.Path, v string, maxLen int) field.ErrorList {
	switch {
	case v == "":
		return field.ErrorList{field.Required(p, "")}
	case len(v) > maxLen:
		return field.ErrorList{field.TooLong(p, "", maxLen)}
	}
	return nil
}

// eventValidateV1 adds the rules of events.k8s.io/v1 to eventValidate.
func eventValidateV1(ev *corev1.Event) field.ErrorList {
	errs := eventValidate(ev, eventV1Paths)
	if ev.EventTime.IsZero() {
		errs = append(errs, field.Required(field.NewPath("eventTime"), ""))
	}
	if ev.Type != corev1.EventTypeNormal && ev.Type != corev1.EventTypeWarning {
		errs = append(errs, field.NotSupported(field.NewPath("type"), ev.Type, []string{corev1.EventTypeNormal, corev1.EventTypeWarning}))
	}
	if s := ev.Series; s != nil {
		if s.Count < 2 {
			errs = append(errs, field.Invalid(field.NewPath("series", "count"), s.Count, "should be at least 2"))
		}
		if s.LastObservedTime.IsZero() {
			errs = append(errs, field.Required(field.NewPath("series", "lastObservedTime"), ""))
		}
	}
	const unset = "needs to be unset"
	if !ev.FirstTimestamp.IsZero() {
		errs = append(errs, field.Invalid(field.NewPath(eventV1Paths.firstTimestamp), "", unset))
	}
	if !ev.LastTimestamp.IsZero() {
		errs = append(errs, field.Invalid(field.NewPath(eventV1Paths.lastTimestamp), "", unset))
	}
	if ev.Count != 0 {
		errs = append(errs, field.Invalid(field.NewPath(eventV1Paths.count), "", unset))
	}
	if ev.Source != (corev1.EventSource{}) {
		errs = append(errs, field.Invalid(field.NewPath(eventV1Paths.source), "", unset))
	}
	return errs
}

// eventValidateV1Update allows an events.k8s.io/v1 update to change only the
// series (and metadata, checked by the strategy). eventTime is compared at
// microsecond precision, the precision of its wire formats.
func eventValidateV1Update(ev, old *corev1.Event) field.ErrorList {
	var errs field.ErrorList
	immutable := func(name string, a, b interface{}) {
		if !equality.Semantic.DeepEqual(a, b) {
			errs = append(errs, field.Invalid(field.NewPath(name), a, "field is immutable"))
		}
	}
	immutable("regarding", ev.InvolvedObject, old.InvolvedObject)
	immutable("related", ev.Related, old.Related)
	immutable("reason", ev.Reason, old.Reason)
	immutable("note", ev.Message, old.Message)
	immutable("type", ev.Type, old.Type)
	immutable("action", ev.Action, old.Action)
	immutable("reportingController", ev.ReportingController, old.ReportingController)
	immutable("reportingInstance", ev.ReportingInstance, old.ReportingInstance)
	if !ev.EventTime.Truncate(time.Microsecond).Equal(old.EventTime.Truncate(time.Microsecond)) {
		errs = append(errs, field.Invalid(field.NewPath("eventTime"), ev.EventTime, "field is immutable"))
	}
	return errs
}

func eventFields(obj runtime.Object) fields.Set {
	ev := obj.(*corev1.Event)
	source := ev.Source.Component
	if source == "" {
		source = ev.ReportingController
	}
	o := ev.InvolvedObject
	return fields.Set{
		"involvedObject.kind":            o.Kind,
		"involvedObject.namespace":       o.Namespace,
		"involvedObject.name":            o.Name,
		"involvedObject.uid":             string(o.UID),
		"involvedObject.apiVersion":      o.APIVersion,
		"involvedObject.resourceVersion": o.ResourceVersion,
		"involvedObject.fieldPath":       o.FieldPath,
		"reason":                         ev.Reason,
		"reportingComponent":             ev.ReportingController,
		"source":                         source,
		"type":                           ev.Type,
	}
}

var eventColumns = []metav1.TableColumnDefinition{
	{Name: "Last Seen", Type: "string", Description: "Time since the event was last observed."},
	{Name: "Type", Type: "string", Description: "Normal or Warning."},
	{Name: "Reason", Type: "string", Description: "Why the event happened, in UpperCamelCase."},
	{Name: "Object", Type: "string", Description: "The object the event is about, as kind/name."},
	{Name: "Subobject", Type: "string", Priority: 1, Description: "The part of the object the event is about."},
	{Name: "Source", Type: "string", Priority: 1, Description: "The component, and host or instance, that reported the event."},
	{Name: "Message", Type: "string", Description: "A human-readable description."},
	{Name: "First Seen", Type: "string", Priority: 1, Description: "Time since the event was first observed."},
	{Name: "Count", Type: "integer", Priority: 1, Description: "How many times the event was observed."},
	{Name: "Name", Type: "string", Format: "name", Priority: 1, Description: "The name of the event object."},
}

// eventRow fills eventColumns. Old-style events carry first and last
// timestamps and a count; new-style ones carry eventTime and, if repeated, a
// series.
func eventRow(obj runtime.Object) []interface{} {
	ev := obj.(*corev1.Event)
	first := Age(ev.FirstTimestamp)
	if ev.FirstTimestamp.IsZero() {
		first = Age(metav1.Time(ev.EventTime))
	}
	last := Age(ev.LastTimestamp)
	if ev.LastTimestamp.IsZero() {
		last = first
	}
	count := ev.Count
	if ev.Series != nil {
		last = Age(metav1.Time(ev.Series.LastObservedTime))
		count = ev.Series.Count
	} else if count == 0 {
		count = 1 // a new-style event seen once has no count
	}
	object := strings.ToLower(ev.InvolvedObject.Kind)
	if ev.InvolvedObject.Name != "" {
		object += "/" + ev.InvolvedObject.Name
	}
	return []interface{}{
		last,
		ev.Type,
		ev.Reason,
		object,
		ev.InvolvedObject.FieldPath,
		eventSource(ev),
		strings.TrimSpace(ev.Message),
		first,
		int64(count),
		ev.Name,
	}
}

// eventSource formats who reported an event as "component, host".
func eventSource(ev *corev1.Event) string {
	component, instance := ev.Source.Component, ev.Source.Host
	if component == "" {
		component = ev.ReportingController
	}
	if instance == "" {
		instance = ev.ReportingInstance
	}
	if instance == "" {
		return component
	}
	return fmt.Sprintf("%s, %s", component, instance)
}
