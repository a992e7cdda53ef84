package configs

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Setting describes one configuration key and where it can be set.
type Setting struct {
	Path  string // YAML path, e.g. sip.ws_addr
	Env   string // GCHD_SIP_WS_ADDR
	Flag  string // sip-ws-addr
	Help  string
	index []int // field index path in Config
}

// Settings lists every setting in the order of the Config struct.
func Settings() []Setting {
	var out []Setting
	var walk func(t reflect.Type, prefix string, index []int)
	walk = func(t reflect.Type, prefix string, index []int) {
		for i := 0; i < t.NumField(); i++ {
			f := t.Field(i)
			name := f.Tag.Get("yaml")
			path := prefix + name
			idx := append(append([]int(nil), index...), i)
			if f.Type.Kind() == reflect.Struct && f.Type != reflect.TypeOf(time.Duration(0)) {
				walk(f.Type, path+".", idx)
				continue
			}
			out = append(out, Setting{
				Path:  path,
				Env:   envName(path),
				Flag:  flagName(path),
				Help:  f.Tag.Get("help"),
				index: idx,
			})
		}
	}
	walk(reflect.TypeOf(Config{}), "", nil)
	return out
}

// removed lists settings that are no more, each with what replaced it. A
// configuration that sets one is refused with that: left alone, the file
// would fail as an unknown key and an environment variable be ignored.
var removed = map[string]string{
	"limits.connections_per_source": "limits.sip_connections_per_source and limits.http_connections_per_source (SIP and HTTP connections are capped separately)",
}

// removedSetting is the error for the removed setting path set at where.
func removedSetting(where, path string) error {
	return fmt.Errorf("%s: %s is no longer a setting: set %s instead", where, path, removed[path])
}

func envName(path string) string {
	return "GCHD_" + strings.ToUpper(strings.NewReplacer(".", "_").Replace(path))
}

func flagName(path string) string { return strings.NewReplacer(".", "-", "_", "-").Replace(path) }

// removedFlag refuses a flag of a removed setting.
type removedFlag struct{ path string }

func (f removedFlag) String() string { return "" }
func (f removedFlag) Set(string) error {
	return fmt.Errorf("%s is no longer a setting: set %s instead", f.path, removed[f.path])
}

// Flags holds the configuration flags of a FlagSet until Load applies them.
type Flags struct {
	fs     *flag.FlagSet
	config *string
	values map[string]*rawValue // by flag name
}

type rawValue struct {
	s   string
	set bool
}

func (v *rawValue) String() string { return v.s }
func (v *rawValue) Set(s string) error {
	v.s, v.set = s, true
	return nil
}

// Register adds -config and a flag for every setting to fs.
func Register(fs *flag.FlagSet) *Flags {
	f := &Flags{fs: fs, values: map[string]*rawValue{}}
	f.config = fs.String("config", "", "YAML configuration file (env GCHD_CONFIG)")
	def := Default()
	for _, s := range Settings() {
		v := &rawValue{}
		f.values[s.Flag] = v
		fs.Var(v, s.Flag, fmt.Sprintf("%s (env %s, default %q)", s.Help, s.Env, fieldString(reflect.ValueOf(def).FieldByIndex(s.index))))
	}
	for path, instead := range removed {
		fs.Var(removedFlag{path}, flagName(path), "removed: use "+instead)
	}
	return f
}

// Load builds the configuration: defaults, then the file named by -config or
// GCHD_CONFIG, then GCHD_* variables from getenv, then flags that were set.
// The result is validated.
func Load(f *Flags, getenv func(string) string) (Config, error) {
	cfg := Default()
	path := getenv("GCHD_CONFIG")
	if f != nil && *f.config != "" {
		path = *f.config
	}
	if path != "" {
		if err := loadFile(&cfg, path); err != nil {
			return Config{}, err
		}
	}
	for path := range removed {
		if getenv(envName(path)) != "" {
			return Config{}, removedSetting("environment "+envName(path), path)
		}
	}
	v := reflect.ValueOf(&cfg).Elem()
	for _, s := range Settings() {
		if raw := getenv(s.Env); raw != "" {
			if err := setField(v.FieldByIndex(s.index), raw); err != nil {
				return Config{}, fmt.Errorf("environment %s: invalid %s %q: %w", s.Env, s.Path, raw, err)
			}
		}
	}
	if f != nil {
		for _, s := range Settings() {
			if raw := f.values[s.Flag]; raw.set {
				if err := setField(v.FieldByIndex(s.index), raw.s); err != nil {
					return Config{}, fmt.Errorf("flag -%s: invalid %s %q: %w", s.Flag, s.Path, raw.s, err)
				}
			}
		}
	}
	if err := cfg.Validate(); err != nil {
		return Config{}, err
	}
	return cfg, nil
}

// loadFile decodes a YAML file over cfg; unknown keys are errors, so that a
// typo does not silently leave a default in place.
func loadFile(cfg *Config, path string) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("config file: %w", err)
	}
	if key := removedIn(data); key != "" {
		return removedSetting("config file "+path, key)
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(cfg); err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("config file %s: %w%s", path, err, settingsAtLines(data, err.Error()))
	}
	return nil
}

// removedIn returns the first removed setting the YAML document sets, ""
// for none (or when it does not parse: the decoder reports that).
func removedIn(data []byte) string {
	var root yaml.Node
	if yaml.Unmarshal(data, &root) != nil {
		return ""
	}
	var walk func(n *yaml.Node, prefix string) string
	walk = func(n *yaml.Node, prefix string) string {
		switch n.Kind {
		case yaml.DocumentNode:
			for _, c := range n.Content {
				if k := walk(c, prefix); k != "" {
					return k
				}
			}
		case yaml.MappingNode:
			for i := 0; i+1 < len(n.Content); i += 2 {
				key := prefix + n.Content[i].Value
				if _, ok := removed[key]; ok {
					return key
				}
				if k := walk(n.Content[i+1], key+"."); k != "" {
					return k
				}
			}
		}
		return ""
	}
	return walk(&root, "")
}

var lineRef = regexp.MustCompile(`line (\d+)`)

// settingsAtLines names the settings on the lines a YAML error refers to,
// since the decoder's own messages give only line numbers and Go types.
func settingsAtLines(data []byte, msg string) string {
	var root yaml.Node
	if yaml.Unmarshal(data, &root) != nil {
		return ""
	}
	at := map[int]string{}
	var walk func(n *yaml.Node, prefix string)
	walk = func(n *yaml.Node, prefix string) {
		switch n.Kind {
		case yaml.DocumentNode:
			for _, c := range n.Content {
				walk(c, prefix)
			}
		case yaml.MappingNode:
			for i := 0; i+1 < len(n.Content); i += 2 {
				key := prefix + n.Content[i].Value
				at[n.Content[i].Line] = key
				walk(n.Content[i+1], key+".")
			}
		}
	}
	walk(&root, "")
	var names []string
	for _, m := range lineRef.FindAllStringSubmatch(msg, -1) {
		if n, err := strconv.Atoi(m[1]); err == nil && at[n] != "" {
			names = append(names, at[n])
		}
	}
	if len(names) == 0 {
		return ""
	}
	return " (setting " + strings.Join(names, ", ") + ")"
}

func setField(v reflect.Value, raw string) error {
	switch v.Interface().(type) {
	case time.Duration:
		d, err := time.ParseDuration(raw)
		if err != nil {
			return errors.New("not a duration such as 10s or 5m")
		}
		v.SetInt(int64(d))
		return nil
	}
	switch v.Kind() {
	case reflect.String:
		v.SetString(raw)
	case reflect.Bool:
		b, err := strconv.ParseBool(raw)
		if err != nil {
			return errors.New("not true or false")
		}
		v.SetBool(b)
	case reflect.Int, reflect.Int64:
		n, err := strconv.ParseInt(raw, 10, 64)
		if err != nil {
			return errors.New("not an integer")
		}
		v.SetInt(n)
	case reflect.Float64:
		f, err := strconv.ParseFloat(raw, 64)
		if err != nil {
			return errors.New("not a number")
		}
		v.SetFloat(f)
	default:
		return fmt.Errorf("unsupported setting type %s", v.Type())
	}
	return nil
}

func fieldString(v reflect.Value) string {
	if d, ok := v.Interface().(time.Duration); ok {
		return d.String()
	}
	return fmt.Sprint(v.Interface())
}
