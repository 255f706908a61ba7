package podenv

import "strings"

// Expand replaces $(NAME) references in s with vars[NAME]. The syntax is the
// one the Kubernetes API documents for env values, command and args:
//
//   - $(NAME) is replaced when vars has NAME and left as written otherwise;
//   - $$ is an escaped $, so $$(NAME) yields the literal text $(NAME);
//   - a $ followed by anything else, or a $( without a closing ), is kept
//     as written.
func Expand(s string, vars map[string]string) string {
	if !strings.Contains(s, "$") {
		return s
	}
	var b strings.Builder
	b.Grow(len(s))
	for i := 0; i < len(s); {
		if s[i] != '$' || i+1 == len(s) {
			b.WriteByte(s[i])
			i++
			continue
		}
		switch s[i+1] {
		case '$':
			b.WriteByte('$')
			i += 2
		case '(':
			end := strings.IndexByte(s[i+2:], ')')
			if end < 0 {
				// Unterminated reference: keep "$(" and carry on after it.
				b.WriteString("$(")
				i += 2
				continue
			}
			name := s[i+2 : i+2+end]
			if v, ok := vars[name]; ok {
				b.WriteString(v)
			} else {
				b.WriteString("$(")
				b.WriteString(name)
				b.WriteByte(')')
			}
			i += 2 + end + 1
		default:
			b.WriteByte('$')
			b.WriteByte(s[i+1])
			i += 2
		}
	}
	return b.String()
}

// ExpandArgs expands $(NAME) references in each of args against env, a list
// of "NAME=value" like [Environment] returns (a later entry of a name wins).
// The kubelet uses it for a container's command and args, after computing
// the environment, as upstream does.
func ExpandArgs(args []string, env []string) []string {
	if args == nil {
		return nil
	}
	vars := make(map[string]string, len(env))
	for _, kv := range env {
		name, value, _ := strings.Cut(kv, "=")
		vars[name] = value
	}
	out := make([]string, len(args))
	for i, a := range args {
		out[i] = Expand(a, vars)
	}
	return out
}
