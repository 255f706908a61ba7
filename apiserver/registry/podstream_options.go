package registry

import (
	"fmt"
	"net/url"
	"strconv"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/conversion"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/validation/field"

	"tether/apiserver/scheme"
)

// The query of pods/log, exec, attach and portforward is decoded by the
// generic server's parameter codec, which converts url.Values into the
// options type through the scheme. k8s.io/api does not carry those
// conversions (upstream generates them inside k8s.io/kubernetes), so they
// are written here, one small function per options type.

var (
	podStreamConversionsOnce sync.Once
	podStreamConversionsErr  error
)

// registerPodStreamConversions teaches the scheme to decode the options of
// the pod streaming subresources from a query.
func registerPodStreamConversions() error {
	podStreamConversionsOnce.Do(func() {
		for _, c := range []struct {
			out any
			fn  conversion.ConversionFunc
		}{
			{(*corev1.PodLogOptions)(nil), convertQueryToPodLogOptions},
			{(*corev1.PodExecOptions)(nil), convertQueryToPodExecOptions},
			{(*corev1.PodAttachOptions)(nil), convertQueryToPodAttachOptions},
			{(*corev1.PodPortForwardOptions)(nil), convertQueryToPodPortForwardOptions},
		} {
			if err := scheme.Scheme.AddConversionFunc((*url.Values)(nil), c.out, c.fn); err != nil {
				podStreamConversionsErr = fmt.Errorf("registry: register query conversion for %T: %w", c.out, err)
				return
			}
		}
	})
	return podStreamConversionsErr
}

// query reads typed parameters out of url.Values with the same rules as
// upstream's generated conversions: the first value counts; for booleans
// anything but "", "0" and "false" is true.
type query struct {
	v url.Values
	s conversion.Scope
}

func (q query) str(name string, out *string) error {
	vals, ok := q.v[name]
	if !ok {
		*out = ""
		return nil
	}
	return runtime.Convert_Slice_string_To_string(&vals, out, q.s)
}

func (q query) flag(name string, out *bool) error {
	vals, ok := q.v[name]
	if !ok {
		*out = false
		return nil
	}
	return runtime.Convert_Slice_string_To_bool(&vals, out, q.s)
}

func (q query) int64p(name string, out **int64) error {
	vals, ok := q.v[name]
	if !ok || len(vals) == 0 || vals[0] == "" {
		*out = nil
		return nil
	}
	n, err := strconv.ParseInt(vals[0], 10, 64)
	if err != nil {
		return fmt.Errorf("%s: %q is not an integer", name, vals[0])
	}
	*out = &n
	return nil
}

func (q query) timep(name string, out **metav1.Time) error {
	vals, ok := q.v[name]
	if !ok {
		*out = nil
		return nil
	}
	return metav1.Convert_Slice_string_To_Pointer_v1_Time(&vals, out, q.s)
}

func (q query) strp(name string, out **string) {
	vals, ok := q.v[name]
	if !ok || len(vals) == 0 {
		*out = nil
		return
	}
	s := vals[0]
	*out = &s
}

func queryOf(in any, s conversion.Scope) (query, error) {
	v, ok := in.(*url.Values)
	if !ok {
		return query{}, fmt.Errorf("expected *url.Values, got %T", in)
	}
	return query{v: *v, s: s}, nil
}

func convertQueryToPodLogOptions(in, out any, s conversion.Scope) error {
	q, err := queryOf(in, s)
	if err != nil {
		return err
	}
	o := out.(*corev1.PodLogOptions)
	q.strp("stream", &o.Stream)
	return firstError(
		q.str("container", &o.Container),
		q.flag("follow", &o.Follow),
		q.flag("previous", &o.Previous),
		q.int64p("sinceSeconds", &o.SinceSeconds),
		q.timep("sinceTime", &o.SinceTime),
		q.flag("timestamps", &o.Timestamps),
		q.int64p("tailLines", &o.TailLines),
		q.int64p("limitBytes", &o.LimitBytes),
		q.flag("insecureSkipTLSVerifyBackend", &o.InsecureSkipTLSVerifyBackend),
	)
}

func convertQueryToPodExecOptions(in, out any, s conversion.Scope) error {
	q, err := queryOf(in, s)
	if err != nil {
		return err
	}
	o := out.(*corev1.PodExecOptions)
	o.Command = append([]string(nil), q.v["command"]...)
	return firstError(
		q.flag("stdin", &o.Stdin),
		q.flag("stdout", &o.Stdout),
		q.flag("stderr", &o.Stderr),
		q.flag("tty", &o.TTY),
		q.str("container", &o.Container),
	)
}

func convertQueryToPodAttachOptions(in, out any, s conversion.Scope) error {
	q, err := queryOf(in, s)
	if err != nil {
		return err
	}
	o := out.(*corev1.PodAttachOptions)
	return firstError(
		q.flag("stdin", &o.Stdin),
		q.flag("stdout", &o.Stdout),
		q.flag("stderr", &o.Stderr),
		q.flag("tty", &o.TTY),
		q.str("container", &o.Container),
	)
}

func convertQueryToPodPortForwardOptions(in, out any, s conversion.Scope) error {
	q, err := queryOf(in, s)
	if err != nil {
		return err
	}
	o := out.(*corev1.PodPortForwardOptions)
	o.Ports = nil
	for _, v := range q.v["ports"] {
		n, err := strconv.ParseInt(v, 10, 32)
		if err != nil {
			return fmt.Errorf("ports: %q is not a port number", v)
		}
		o.Ports = append(o.Ports, int32(n))
	}
	return nil
}

func firstError(errs ...error) error {
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// podLogValidate checks log options as upstream does: tailLines not
// negative, limitBytes and sinceSeconds positive, at most one of
// sinceSeconds and sinceTime, and a stream (if any) of All, Stdout or
// Stderr, where a single stream excludes tailLines.
func podLogValidate(o *corev1.PodLogOptions) field.ErrorList {
	var errs field.ErrorList
	if o.TailLines != nil && *o.TailLines < 0 {
		errs = append(errs, field.Invalid(field.NewPath("tailLines"), *o.TailLines, "must be greater than or equal to 0"))
	}
	if o.LimitBytes != nil && *o.LimitBytes < 1 {
		errs = append(errs, field.Invalid(field.NewPath("limitBytes"), *o.LimitBytes, "must be greater than 0"))
	}
	switch {
	case o.SinceSeconds != nil && o.SinceTime != nil:
		errs = append(errs, field.Forbidden(field.NewPath("sinceSeconds"), "at most one of `sinceTime` or `sinceSeconds` may be specified"))
	case o.SinceSeconds != nil && *o.SinceSeconds < 1:
		errs = append(errs, field.Invalid(field.NewPath("sinceSeconds"), *o.SinceSeconds, "must be greater than 0"))
	}
	if o.Stream != nil {
		streams := []string{corev1.LogStreamStdout, corev1.LogStreamStderr, corev1.LogStreamAll}
		switch *o.Stream {
		case corev1.LogStreamStdout, corev1.LogStreamStderr:
			if o.TailLines != nil {
				errs = append(errs, field.Forbidden(field.NewPath("tailLines"), "`tailLines` and a specific `stream` are mutually exclusive"))
			}
		case corev1.LogStreamAll:
		default:
			errs = append(errs, field.NotSupported(field.NewPath("stream"), *o.Stream, streams))
		}
	}
	return errs
}

// podLogQuery is the kubelet's /containerLogs query for o: only the
// options that are set are forwarded.
func podLogQuery(o *corev1.PodLogOptions) url.Values {
	q := url.Values{}
	if o.Follow {
		q.Set("follow", "true")
	}
	if o.Previous {
		q.Set("previous", "true")
	}
	if o.Timestamps {
		q.Set("timestamps", "true")
	}
	if o.SinceSeconds != nil {
		q.Set("sinceSeconds", strconv.FormatInt(*o.SinceSeconds, 10))
	}
	if o.SinceTime != nil {
		q.Set("sinceTime", o.SinceTime.Format(time.RFC3339))
	}
	if o.TailLines != nil {
		q.Set("tailLines", strconv.FormatInt(*o.TailLines, 10))
	}
	if o.LimitBytes != nil {
		q.Set("limitBytes", strconv.FormatInt(*o.LimitBytes, 10))
	}
	if o.Stream != nil {
		q.Set("stream", *o.Stream)
	}
	return q
}

// kubeletStreamQuery is the kubelet's /exec or /attach query: the
// API's stdin/stdout/stderr/tty become input/output/error/tty, and the
// command is repeated as command=.
func kubeletStreamQuery(stdin, stdout, stderr, tty bool, command []string) url.Values {
	q := url.Values{}
	for name, on := range map[string]bool{"input": stdin, "output": stdout, "error": stderr, "tty": tty} {
		if on {
			q.Set(name, "1")
		}
	}
	for _, c := range command {
		q.Add("command", c)
	}
	return q
}
