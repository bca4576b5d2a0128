// helmrender renders a Helm chart the way `helm template` does, with the engine Helm itself uses: Go's
// text/template with sprig's functions plus Helm's own (include, tpl, required, toYaml, fromYaml, toJson,
// fromJson, lookup), .Values coalesced from values.yaml, -f files and --set / --set-string in command-line order,
// .Release, .Chart and .Capabilities. The tests install the chart as Kaapana's kube-helm would (it calls
// `helm install ... --set-string global.<param>=<value> ...`) and need the real template semantics (missing keys,
// `default`, pipelines, whitespace trimming) without a Helm binary or a cluster.
//
// Built in GOPATH mode against Debian's packages (golang-go, golang-github-masterminds-sprig-dev):
//
//	GO111MODULE=off GOPATH=/usr/share/gocode go build -o helmrender tests/chart/helmrender.go
//
// Usage: helmrender -chart DIR [-name RELEASE] [-namespace NS] [-f values.yaml]... [--set k=v]... [--set-string k=v]...
// Writes every rendered template as a YAML stream to stdout ("# Source: <chart>/templates/<file>" before each),
// skipping partials (_*.tpl) and templates that render to whitespace only, as Helm does.
package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/ioutil"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"text/template"

	"github.com/Masterminds/sprig"
	"gopkg.in/yaml.v2"
)

// ---- values ----

// normalize turns what yaml.v2 decodes (map[interface{}]interface{}) into the map[string]interface{} that Helm's
// values are (it decodes through JSON), recursively.
func normalize(v interface{}) interface{} {
	switch t := v.(type) {
	case map[interface{}]interface{}:
		m := make(map[string]interface{}, len(t))
		for k, val := range t {
			m[fmt.Sprint(k)] = normalize(val)
		}
		return m
	case map[string]interface{}:
		for k, val := range t {
			t[k] = normalize(val)
		}
		return t
	case []interface{}:
		for i := range t {
			t[i] = normalize(t[i])
		}
		return t
	case int:
		return int64(t) // JSON-decoded numbers in Helm are float64/int64; keep integers integral
	}
	return v
}

func readYAML(path string) (map[string]interface{}, error) {
	b, err := ioutil.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var raw interface{}
	if err := yaml.Unmarshal(b, &raw); err != nil {
		return nil, fmt.Errorf("%s: %v", path, err)
	}
	if raw == nil {
		return map[string]interface{}{}, nil
	}
	m, ok := normalize(raw).(map[string]interface{})
	if !ok {
		return nil, fmt.Errorf("%s: not a mapping", path)
	}
	return m, nil
}

// merge copies src over dst (maps merged key by key, anything else replaced), as Helm coalesces -f files.
func merge(dst, src map[string]interface{}) {
	for k, v := range src {
		if sm, ok := v.(map[string]interface{}); ok {
			if dm, ok := dst[k].(map[string]interface{}); ok {
				merge(dm, sm)
				continue
			}
		}
		dst[k] = v
	}
}

// splitUnescaped splits s at sep where sep is not preceded by a backslash; the backslashes stay.
func splitUnescaped(s string, sep byte) []string {
	var out []string
	start := 0
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' {
			i++
			continue
		}
		if s[i] == sep {
			out = append(out, s[start:i])
			start = i + 1
		}
	}
	return append(out, s[start:])
}

// unescape drops the backslash before any character (Helm's strvals: "\," is ",", "\{" is "{").
func unescape(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+1 < len(s) {
			i++
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// typed is Helm's --set value typing: null, booleans and integers; everything else a string.
func typed(s string) interface{} {
	switch s {
	case "null":
		return nil
	case "true":
		return true
	case "false":
		return false
	}
	if n, err := strconv.ParseInt(s, 10, 64); err == nil && (s == "0" || !strings.HasPrefix(s, "0")) {
		return n
	}
	return s
}

// setPath sets a.b[2].c = v inside values, creating maps and growing lists as Helm's strvals does.
func setPath(values map[string]interface{}, key string, v interface{}) error {
	parts := strings.Split(key, ".")
	var cur interface{} = values

	for i, p := range parts {
		name, idx := p, -1
		if j := strings.IndexByte(p, '['); j >= 0 && strings.HasSuffix(p, "]") {
			n, err := strconv.Atoi(p[j+1 : len(p)-1])
			if err != nil || n < 0 {
				return fmt.Errorf("bad index in %q", key)
			}
			name, idx = p[:j], n
		}
		m, ok := cur.(map[string]interface{})
		if !ok {
			return fmt.Errorf("%q: %s is not a map", key, strings.Join(parts[:i], "."))
		}
		last := i == len(parts)-1
		if idx < 0 {
			if last {
				m[name] = v
				return nil
			}
			next, ok := m[name].(map[string]interface{})
			if !ok {
				next = map[string]interface{}{}
				m[name] = next
			}
			cur = next
			continue
		}
		list, _ := m[name].([]interface{})
		for len(list) <= idx {
			list = append(list, nil)
		}
		m[name] = list
		if last {
			list[idx] = v
			return nil
		}
		next, ok := list[idx].(map[string]interface{})
		if !ok {
			next = map[string]interface{}{}
			list[idx] = next
		}
		cur = next
	}
	return nil
}

// applySet applies one --set (asString false) or --set-string argument: "k=v[,k2=v2...]", with "\," inside values.
func applySet(values map[string]interface{}, arg string, asString bool) error {
	for _, kv := range splitUnescapedOutsideBraces(arg) {
		eq := strings.IndexByte(kv, '=')
		if eq <= 0 {
			return fmt.Errorf("--set %q: key=value expected", kv)
		}
		key, raw := kv[:eq], kv[eq+1:]
		var v interface{}
		switch {
		case !asString && strings.HasPrefix(raw, "{") && strings.HasSuffix(raw, "}"):
			var list []interface{}
			inner := raw[1 : len(raw)-1]
			if inner != "" {
				for _, item := range splitUnescaped(inner, ',') {
					list = append(list, typed(unescape(item)))
				}
			}
			v = list
		case asString:
			v = unescape(raw)
		default:
			v = typed(unescape(raw))
		}
		if err := setPath(values, key, v); err != nil {
			return err
		}
	}
	return nil
}

// splitUnescapedOutsideBraces splits "a=1,b={x,y}" into its assignments: commas inside {...} belong to a list.
func splitUnescapedOutsideBraces(s string) []string {
	var out []string
	depth, start := 0, 0
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '\\':
			i++
		case '{':
			depth++
		case '}':
			if depth > 0 {
				depth--
			}
		case ',':
			if depth == 0 {
				out = append(out, s[start:i])
				start = i + 1
			}
		}
	}
	return append(out, s[start:])
}

// ---- the engine ----

func toYAML(v interface{}) string {
	b, err := yaml.Marshal(v)
	if err != nil {
		return ""
	}
	return strings.TrimSuffix(string(b), "\n")
}

func fromYAML(s string) map[string]interface{} {
	var raw interface{}
	if err := yaml.Unmarshal([]byte(s), &raw); err != nil {
		return map[string]interface{}{"Error": err.Error()}
	}
	m, _ := normalize(raw).(map[string]interface{})
	if m == nil {
		m = map[string]interface{}{}
	}
	return m
}

func toJSON(v interface{}) string {
	b, err := json.Marshal(v)
	if err != nil {
		return ""
	}
	return string(b)
}

func fromJSON(s string) map[string]interface{} {
	m := map[string]interface{}{}
	if err := json.Unmarshal([]byte(s), &m); err != nil {
		m["Error"] = err.Error()
	}
	return m
}

type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, " ") }
func (m *multiFlag) Set(s string) error { *m = append(*m, s); return nil }

type setArg struct {
	arg      string
	asString bool
}

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "helmrender:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	chartDir, release, namespace := "", "release-name", "default"
	var files []string
	var sets []setArg
	for i := 0; i < len(args); i++ {
		a := args[i]
		val := func() (string, error) {
			if j := strings.IndexByte(a, '='); j >= 0 && strings.HasPrefix(a, "--") && !strings.HasPrefix(a, "--set") {
				return a[j+1:], nil
			}
			if i+1 >= len(args) {
				return "", fmt.Errorf("%s needs a value", a)
			}
			i++
			return args[i], nil
		}
		var err error
		var v string
		switch a {
		case "-chart", "--chart":
			chartDir, err = val()
		case "-name", "--name":
			release, err = val()
		case "-namespace", "--namespace", "-n":
			namespace, err = val()
		case "-f", "--values":
			v, err = val()
			files = append(files, v)
		case "--set":
			v, err = val()
			sets = append(sets, setArg{v, false})
		case "--set-string":
			v, err = val()
			sets = append(sets, setArg{v, true})
		default:
			return fmt.Errorf("unknown argument %q", a)
		}
		if err != nil {
			return err
		}
	}
	if chartDir == "" {
		return errors.New("-chart DIR is required")
	}

	chartMeta, err := readYAML(filepath.Join(chartDir, "Chart.yaml"))
	if err != nil {
		return err
	}
	values, err := readYAML(filepath.Join(chartDir, "values.yaml"))
	if err != nil {
		return err
	}
	for _, f := range files {
		m, err := readYAML(f)
		if err != nil {
			return err
		}
		merge(values, m)
	}
	for _, s := range sets {
		if err := applySet(values, s.arg, s.asString); err != nil {
			return err
		}
	}

	chartName := fmt.Sprint(chartMeta["name"])
	chart := map[string]interface{}{
		"Name": chartName, "Version": chartMeta["version"], "AppVersion": chartMeta["appVersion"],
		"Description": chartMeta["description"], "Keywords": chartMeta["keywords"],
		"Annotations": chartMeta["annotations"], "Type": chartMeta["type"],
	}
	if chart["Keywords"] == nil {
		chart["Keywords"] = []interface{}{}
	}
	top := map[string]interface{}{
		"Values":  values,
		"Chart":   chart,
		"Release": map[string]interface{}{"Name": release, "Namespace": namespace, "Service": "Helm", "IsInstall": true, "IsUpgrade": false, "Revision": 1},
		"Capabilities": map[string]interface{}{
			"KubeVersion": map[string]interface{}{"Version": "v1.29.0", "Major": "1", "Minor": "29", "GitVersion": "v1.29.0"},
		},
		"Template": map[string]interface{}{"BasePath": chartName + "/templates"},
	}

	// Every file under templates/, named as Helm names them.
	var names []string
	sources := map[string]string{}
	tdir := filepath.Join(chartDir, "templates")
	err = filepath.Walk(tdir, func(p string, info os.FileInfo, err error) error {
		if err != nil || info.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(tdir, p)
		b, err := ioutil.ReadFile(p)
		if err != nil {
			return err
		}
		name := chartName + "/templates/" + filepath.ToSlash(rel)
		names = append(names, name)
		sources[name] = string(b)
		return nil
	})
	if err != nil {
		return err
	}
	sort.Strings(names)

	root := template.New("helmrender")
	funcs := sprig.TxtFuncMap()
	delete(funcs, "env") // Helm removes these two: a chart must not read the renderer's environment
	delete(funcs, "expandenv")
	includeDepth := 0
	funcs["include"] = func(name string, data interface{}) (string, error) {
		includeDepth++
		defer func() { includeDepth-- }()
		if includeDepth > 1000 {
			return "", fmt.Errorf("include %q: nested too deep", name)
		}
		var b bytes.Buffer
		if err := root.ExecuteTemplate(&b, name, data); err != nil {
			return "", err
		}
		return b.String(), nil
	}
	funcs["tpl"] = func(text string, data interface{}) (string, error) {
		t, err := root.Clone()
		if err != nil {
			return "", err
		}
		t, err = t.New("tpl").Option("missingkey=zero").Parse(text)
		if err != nil {
			return "", err
		}
		var b bytes.Buffer
		if err := t.Execute(&b, data); err != nil {
			return "", err
		}
		return strings.Replace(b.String(), "<no value>", "", -1), nil
	}
	funcs["required"] = func(msg string, v interface{}) (interface{}, error) {
		if v == nil {
			return nil, errors.New(msg)
		}
		if s, ok := v.(string); ok && s == "" {
			return nil, errors.New(msg)
		}
		return v, nil
	}
	funcs["toYaml"] = toYAML
	funcs["fromYaml"] = fromYAML
	funcs["toJson"] = toJSON
	funcs["fromJson"] = fromJSON
	funcs["lookup"] = func(string, string, string, string) map[string]interface{} { return map[string]interface{}{} }
	root.Funcs(funcs).Option("missingkey=zero")
	for _, n := range names {
		if _, err := root.New(n).Parse(sources[n]); err != nil {
			return err
		}
	}

	var out bytes.Buffer
	for _, n := range names {
		if strings.HasPrefix(filepath.Base(n), "_") {
			continue
		}
		var b bytes.Buffer
		if err := root.ExecuteTemplate(&b, n, top); err != nil {
			return err
		}
		text := strings.Replace(b.String(), "<no value>", "", -1)
		if strings.TrimSpace(text) == "" {
			continue
		}
		fmt.Fprintf(&out, "---\n# Source: %s\n%s\n", n, strings.TrimRight(text, "\n"))
	}
	_, err = os.Stdout.Write(out.Bytes())
	return err
}
